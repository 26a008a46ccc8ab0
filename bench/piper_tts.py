#!/usr/bin/env python3
"""Piper itself (PyPI piper-tts 1.8.0, onnxruntime, 2 intra-op threads) on
the sentences the TTS bench uses, for comparison.

Same voice files tete loads ($TETE_HOME/models/piper-en_US-joe-medium),
Piper's default inference scales. For each text: the phoneme ids Piper
feeds its model (the Rust bench synthesises exactly these ids), the best
time over the repeats of `phonemize + phoneme_ids_to_audio` per sentence,
and the audio length. Piper returns a sentence's audio only when the whole
sentence is done, so its time to first audio is the first sentence's time.
Prints one JSON object and writes it to $TETE_HOME/bench/piper_tts.json,
where `cargo bench -p tete-bench --bench tts` finds it.

    python3 bench/piper_tts.py [--repeats N]

Without piper importable, it makes a venv in $TETE_HOME/venvs/piper,
installs piper-tts from PyPI into it, and runs itself again there.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HOME = os.environ.get("TETE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tete")
VOICE = os.path.join(HOME, "models", "piper-en_US-joe-medium", "en_US-joe-medium.onnx")

SENTENCE = "Nice to meet you, my friend."  # six words
PARAGRAPH = (
    "Thanks for joining the call today. I looked at the numbers you sent over last week, "
    "and the picture is better than I expected. Sales in the northern region grew by a "
    "fifth, while costs stayed almost flat. If we keep this pace through the winter, we "
    "can hire two more people in the spring. Let me know which of these points you would "
    "like to go through first."
)


def ensure_piper():
    try:
        import piper  # noqa: F401
    except ImportError:
        venv = os.path.join(HOME, "venvs", "piper")
        python = os.path.join(venv, "bin", "python3")
        if not os.path.exists(python):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([python, "-m", "pip", "install", "-q", "piper-tts==1.8.0", "onnxruntime"], check=True)
        os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ensure_piper()
    import onnxruntime
    from piper import PiperVoice

    voice = PiperVoice.load(VOICE)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    voice.session = onnxruntime.InferenceSession(VOICE, sess_options=options, providers=["CPUExecutionProvider"])
    rate = voice.config.sample_rate

    result = {"sample_rate": rate, "threads": 2, "piper_tts": "1.8.0", "onnxruntime": onnxruntime.__version__}
    for name, text in [("sentence", SENTENCE), ("paragraph", PARAGRAPH)]:
        sentences = voice.phonemize(text)
        ids = [voice.phonemes_to_ids(s) for s in sentences]
        voice.phoneme_ids_to_audio(ids[0])  # warm-up
        best_total, best_first, samples = float("inf"), float("inf"), 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            first, samples = None, 0
            for s in voice.phonemize(text):
                audio = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(s))
                samples += len(audio)
                if first is None:
                    first = time.perf_counter() - start
            total = time.perf_counter() - start
            best_total, best_first = min(best_total, total), min(best_first, first)
        result[name] = {
            "text": text,
            "ids": ids,
            "seconds": best_total,
            "first_audio_seconds": best_first,
            "audio_seconds": samples / rate,
            "rtf": best_total / (samples / rate),
        }
    out = os.path.join(HOME, "bench", "piper_tts.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f)
    summary = {k: ({kk: vv for kk, vv in v.items() if kk not in ("ids", "text")} if isinstance(v, dict) else v) for k, v in result.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
