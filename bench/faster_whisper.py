#!/usr/bin/env python3
"""faster-whisper on the clips the ASR bench uses, for comparison.

Runs CTranslate2 (int8, cpu_threads=2, greedy, temperature 0, timestamps on,
no VAD) on the same whisper-tiny.en CT2 files tete loads
($TETE_HOME/models/whisper-tiny.en), over the five LibriVox clips of Debian's
pocketsphinx-testdata. Prints one JSON object and writes it to
$TETE_HOME/bench/faster_whisper.json, where `cargo bench -p tete-bench
--bench asr` finds it and prints tete's time against it.

    python3 bench/faster_whisper.py [--repeats N]

Without faster-whisper importable, it makes a venv in
$TETE_HOME/venvs/faster-whisper, installs faster-whisper from PyPI into it,
and runs itself again there.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time
import wave

# This file's name is the package's: import the package, not this script.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

HOME = os.environ.get("TETE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tete")
CLIPS = "/usr/share/pocketsphinx/test/data/librivox/*.wav"
VENV = os.path.join(HOME, "venvs", "faster-whisper")


def ensure_faster_whisper():
    try:
        import faster_whisper  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit("faster-whisper is not importable even in " + VENV)
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "faster-whisper"], check=True)
    os.execv(python, [python, *sys.argv])


def read_clip(path):
    import numpy as np

    with wave.open(path, "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the clips (best is kept)")
    parser.add_argument("--model", default=os.path.join(HOME, "models", "whisper-tiny.en"))
    args = parser.parse_args()
    ensure_faster_whisper()
    from faster_whisper import WhisperModel

    clips = sorted(glob.glob(CLIPS))
    if not clips:
        sys.exit(f"no clips at {CLIPS} (apt-get install pocketsphinx-testdata)")
    audio = [(os.path.basename(p), read_clip(p)) for p in clips]
    model = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=2, num_workers=1)

    def run(pcm):
        segments, _ = model.transcribe(
            pcm,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=True,
            without_timestamps=False,
            vad_filter=False,
        )
        return "".join(s.text for s in segments).strip()

    run(audio[0][1])  # warm-up
    best = None
    for _ in range(args.repeats):
        rows = []
        for name, pcm in audio:
            start = time.perf_counter()
            text = run(pcm)
            rows.append({"clip": name, "audio_s": len(pcm) / 16000, "seconds": time.perf_counter() - start, "text": text})
        total = sum(r["seconds"] for r in rows)
        if best is None or total < best[0]:
            best = (total, rows)
    total, rows = best
    audio_s = sum(r["audio_s"] for r in rows)
    result = {
        "engine": "faster-whisper",
        "model": args.model,
        "compute_type": "int8",
        "cpu_threads": 2,
        "audio_seconds": audio_s,
        "seconds": total,
        "rtf": total / audio_s,
        "clips": rows,
    }
    out_dir = os.path.join(HOME, "bench")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "faster_whisper.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
