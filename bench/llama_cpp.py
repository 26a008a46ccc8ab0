#!/usr/bin/env python3
"""llama.cpp on the GGUF file tete's LLM bench uses, for comparison.

Runs llama-cpp-python (built from source here, native CPU features, 2 threads)
on the given token ids: the prefill time of the whole prompt (best of a few
runs), then greedy decoding of N tokens after it. Prints one JSON object:
{"prefill_tokens", "prefill_seconds", "decode_tokens", "decode_seconds",
"version"}. `cargo bench -p tete-bench --bench llm` runs it and prints the
ratios; it is not part of CI.

    python3 bench/llama_cpp.py MODEL.gguf --ids 1,2,3 [--decode 64] [--threads 2]

Without llama_cpp importable, it makes a venv in $TETE_HOME/venvs/llama-cpp,
builds llama-cpp-python from PyPI into it (CMAKE_ARGS=-DGGML_NATIVE=ON; a few
minutes on two cores) and runs itself again there.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# This file's name is the package's: import the package, not this script.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

HOME = os.environ.get("TETE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tete")
VENV = os.path.join(HOME, "venvs", "llama-cpp")
PACKAGE = "llama-cpp-python==0.3.36"


def ensure_llama_cpp():
    try:
        import llama_cpp  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit("llama_cpp is not importable even in " + VENV)
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    env = dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=ON", CMAKE_BUILD_PARALLEL_LEVEL="2")
    subprocess.run([python, "-m", "pip", "install", "-q", PACKAGE], check=True, env=env, stdout=sys.stderr)
    os.execv(python, [python, *sys.argv])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--ids", required=True, help="comma-separated prompt token ids")
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ensure_llama_cpp()
    import llama_cpp

    ids = [int(t) for t in args.ids.split(",")]
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=2048,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=False,
        verbose=False,
    )
    prefill = []
    for _ in range(args.runs):
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        prefill.append(time.perf_counter() - start)

    # Greedy decoding through llama.cpp's own sampler (top_k 1): the clock
    # starts when the first token (the prefill's) arrives.
    decoded, decode_seconds = 0, 0.0
    for _ in range(args.runs):
        start, n = None, 0
        for _token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            if start is None:
                start = time.perf_counter()
                continue
            n += 1
            if n == args.decode:
                break
        decode_seconds += time.perf_counter() - start
        decoded += n
    print(
        json.dumps(
            {
                "version": llama_cpp.__version__,
                "prefill_tokens": len(ids),
                "prefill_seconds": min(prefill),
                "decode_tokens": decoded,
                "decode_seconds": decode_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
