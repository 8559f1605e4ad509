//! Real PostgreSQL and Redis servers for tests, from Debian's packages (`scripts/setup` installs
//! them): each in a temporary directory, on a free port of 127.0.0.1, stopped afterwards.
//!
//! A missing server binary fails the test with what to run; it never skips (a run with
//! `CI=true` must not pass without the engines it claims to test).
//!
//! - [`postgres`]: one server per test binary, started on first use, with a fresh database per
//!   call to [`Postgres::database`]. PostgreSQL refuses to run as root, so as root it runs as the
//!   `postgres` user. It is stopped when the test binary exits, however it exits: it runs under
//!   a small shell that waits on a pipe from this process and stops the server (and removes its
//!   directory) when the pipe closes.
//! - [`postgres_with_tls`]: another such server, which accepts TLS connections only, with a
//!   certificate for `localhost` from an authority made for it by the `openssl` command
//!   ([`Postgres::certificates`]).
//! - [`RedisServer`]: one per test (it starts in milliseconds), so a test can stop and restart
//!   it; stopped when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(30);

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener.local_addr().expect("no local address").port()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `binary` on PATH or under one of `dirs` (newest version first), or a failure that says how to
/// install it.
fn find_binary(binary: &str, dirs: &[PathBuf], package: &str) -> PathBuf {
    for dir in dirs {
        let path = dir.join(binary);
        if path.is_file() {
            return path;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join(binary);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "`{binary}` is not installed: run scripts/setup (or `apt-get install {package}`); tests \
         that need a real {package} server never skip"
    );
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + START_WAIT;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not accept connections on 127.0.0.1:{port} within {START_WAIT:?}:\n{log}");
}

/// The test binary's PostgreSQL server (started on first use).
pub fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| Postgres::start(false))
}

/// The test binary's PostgreSQL server that accepts TLS connections only (started on first
/// use): `ssl = on`, and `hostssl` as the only TCP lines of its `pg_hba.conf`, so whatever
/// connects to it speaks TLS.
pub fn postgres_with_tls() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| Postgres::start(true))
}

/// The PEM files of a TLS server's authorities, for its clients' `sslrootcert`.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The authority that signed the server's certificate, which names `localhost` only (not
    /// `127.0.0.1`).
    pub ca: PathBuf,
    /// An authority that signed nothing of this server's.
    pub other_ca: PathBuf,
}

impl Certificates {
    /// Makes two authorities and a certificate for `localhost` from the first in `dir` (as
    /// `ca.pem`, `other-ca.pem`, `server.pem` and `server.key`), with the `openssl` command.
    fn make(dir: &Path) -> Self {
        let openssl = find_binary("openssl", &[PathBuf::from("/usr/bin")], "openssl");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .output()
                .expect("cannot run openssl");
            assert!(
                out.status.success(),
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        const P256: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (name, subject) in [("ca", "/CN=Confab test CA"), ("other-ca", "/CN=Confab other CA")] {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            run(&[
                &["req", "-x509", "-nodes", "-days", "2", "-subj", subject][..],
                &P256,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &pem,
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat());
        }
        run(&[
            &["req", "-nodes", "-subj", "/CN=localhost"][..],
            &P256,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("cannot write server.ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        // PostgreSQL refuses a key that its group or others may read.
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .expect("cannot chmod server.key");
        Self { ca: dir.join("ca.pem"), other_ca: dir.join("other-ca.pem") }
    }
}

/// A PostgreSQL server of this test binary.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    /// The server's data directory (its `postmaster.pid` names the server's process).
    data: PathBuf,
    bin: PathBuf,
    /// Set for a server that speaks TLS.
    certificates: Option<Certificates>,
    /// Closing it (when the process exits) stops the server.
    _lifeline: Mutex<ChildStdin>,
    /// The shell that runs the server; it outlives this process only as long as the server
    /// takes to stop, so it is never waited for.
    _shell: Mutex<Child>,
}

impl Postgres {
    /// A server of the calling test's own, which it may pause: stopped like the shared one.
    pub fn dedicated() -> Self {
        Self::start(false)
    }

    /// Freezes the server and every connection to it (SIGSTOP to the postmaster and to its
    /// backends, each of which leads a process group of its own), as a network partition would:
    /// queries neither answer nor fail until [`Postgres::resume`].
    pub fn pause(&self) {
        let postmaster = self.postmaster();
        signal_children("-STOP", &postmaster);
        signal("-STOP", &postmaster);
    }

    pub fn resume(&self) {
        let postmaster = self.postmaster();
        signal("-CONT", &postmaster);
        signal_children("-CONT", &postmaster);
    }

    fn postmaster(&self) -> String {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .expect("PostgreSQL is not running");
        pid_file.lines().next().unwrap_or_default().trim().to_owned()
    }

    fn start(tls: bool) -> Self {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
            .unwrap_or_default();
        versions.sort();
        versions.reverse();
        let bin = find_binary("postgres", &versions, "postgresql").with_file_name("");
        let as_root = running_as_root();
        let dir = tempfile::Builder::new().prefix("confab-pg-").tempdir().unwrap().keep();
        let data = dir.join("data");
        let log = dir.join("server.log");
        // Let the `postgres` user into the directory (the temp dir's parent is world-readable).
        let run_as = |program: &Path| {
            let mut command = if as_root {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            } else {
                Command::new(program)
            };
            command.current_dir(&dir);
            command
        };
        let certificates = tls.then(|| {
            let tls_dir = dir.join("tls");
            std::fs::create_dir(&tls_dir).expect("cannot create the certificates' directory");
            // Local connections (none is made) stay possible; TCP ones must use TLS.
            std::fs::write(
                tls_dir.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("cannot write pg_hba.conf");
            Certificates::make(&tls_dir)
        });
        if as_root {
            let status = Command::new("chown").args(["-R", "postgres:"]).arg(&dir).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "cannot chown {} to postgres",
                dir.display()
            );
        }
        let out = run_as(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"])
            .output()
            .expect("cannot run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // The server runs under a shell that stops it and removes its directory once this
        // process closes the shell's stdin (by exiting, whatever the way).
        let mut server = format!(
            "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=64MB",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
        );
        if tls {
            let tls_dir = dir.join("tls");
            server.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key \
                 -c hba_file={dir}/pg_hba.conf",
                dir = tls_dir.display()
            ));
        }
        let script = format!(
            "{server} >{log} 2>&1 & pid=$!; cat >/dev/null; kill -INT $pid; wait $pid; \
             rm -rf {dir}",
            log = log.display(),
            dir = dir.display(),
        );
        let mut shell = Command::new("sh");
        if as_root {
            shell = Command::new("runuser");
            shell.args(["-u", "postgres", "--", "sh"]);
        }
        let mut child = shell
            .args(["-c", &script])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start PostgreSQL");
        let lifeline = child.stdin.take().expect("piped stdin");
        wait_for_port(port, "PostgreSQL", &log);
        let server = Self {
            port,
            data: data.clone(),
            bin,
            certificates,
            _lifeline: Mutex::new(lifeline),
            _shell: Mutex::new(child),
        };
        server.wait_until_ready(&log);
        server
    }

    fn wait_until_ready(&self, log: &Path) {
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("PostgreSQL did not answer queries within {START_WAIT:?}:\n{log}");
    }

    /// Runs `sql` on `database` with `psql`; its output, or its error output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U"])
            .arg("postgres")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; its `postgres://` URL.
    pub fn database(&self) -> String {
        self.database_at("127.0.0.1", "")
    }

    /// A new, empty database; its `postgres://` URL with `host` for the server's address
    /// (`127.0.0.1`, or `localhost`, which a TLS server's certificate names) and `query` as its
    /// parameters (for example `sslmode=verify-full`), if any.
    pub fn database_at(&self, host: &str, query: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let url = format!("postgres://postgres@{host}:{}/{name}", self.port);
        if query.is_empty() { url } else { format!("{url}?{query}") }
    }

    /// The authorities of a server that speaks TLS ([`postgres_with_tls`]).
    pub fn certificates(&self) -> &Certificates {
        self.certificates.as_ref().expect("this PostgreSQL server does not speak TLS")
    }
}

impl Drop for Postgres {
    /// A server paused by a test that then failed is resumed, so that it can stop.
    fn drop(&mut self) {
        if let Ok(pid_file) = std::fs::read_to_string(self.data.join("postmaster.pid")) {
            let postmaster = pid_file.lines().next().unwrap_or_default().trim().to_owned();
            let _ = Command::new("kill").args(["-CONT", &postmaster]).status();
            let _ = Command::new("pkill").args(["-CONT", "-P", &postmaster]).status();
        }
    }
}

fn signal(signal: &str, pid: &str) {
    let status = Command::new("kill").args([signal, pid]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid} failed");
}

/// Signals every child of `pid` (none is not an error).
fn signal_children(signal: &str, pid: &str) {
    let status = Command::new("pkill").args([signal, "-P", pid]).status();
    let fine = status.is_ok_and(|s| s.code().is_some_and(|code| code <= 1));
    assert!(fine, "pkill {signal} -P {pid} failed");
}

/// A Redis server of one test, on a free port; stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let binary = find_binary("redis-server", &[PathBuf::from("/usr/bin")], "redis-server");
        let dir = tempfile::Builder::new().prefix("confab-redis-").tempdir().unwrap();
        let mut server = Self { port: free_port(), dir, binary, child: None };
        server.restart();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as a crash would: SIGKILL); its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (stopping it first if it runs), empty.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.path().join("redis.log");
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no", "--logfile"])
            .arg(&log)
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        wait_for_port(self.port, "Redis", &log);
        // Ready when it answers PING.
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if self.command("PING").is_ok_and(|answer| answer == "+PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("Redis did not answer PING within {START_WAIT:?}");
    }

    /// Sends one inline command and returns the first line of its answer (for checks in tests;
    /// the relay speaks to Redis through its own client).
    pub fn command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        std::io::Write::write_all(&mut stream, format!("{command}\r\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(stream.by_ref()).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_serves_a_fresh_database_per_call() {
        let server = postgres();
        let first = server.database();
        let second = server.database();
        assert_ne!(first, second);
        let name = first.rsplit('/').next().unwrap();
        server.psql(name, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)").unwrap();
        assert_eq!(server.psql(name, "SELECT x FROM t").unwrap(), "7");
        let other = second.rsplit('/').next().unwrap();
        assert!(server.psql(other, "SELECT x FROM t").is_err(), "databases are separate");
    }

    #[test]
    fn redis_can_be_stopped_and_started_again_on_its_port() {
        let mut redis = RedisServer::start();
        assert_eq!(redis.command("SET k v").unwrap(), "+OK");
        redis.stop();
        assert!(redis.command("PING").is_err(), "stopped");
        redis.restart();
        assert_eq!(redis.command("EXISTS k").unwrap(), ":0", "it starts empty");
    }
}
