#!/usr/bin/env python3
"""Reads a media file with PyAV (FFmpeg's demuxers and decoders, no one
here wrote them) for the recording tests, and prints one JSON object:
the container's format and duration, each stream's codec and size, every
decoded picture's time and mean luma of its top and bottom halves, and the
decoded audio (resampled to 48 kHz mono) as the power at the given tone
frequencies in 10 ms windows.

    python3 probe_media.py FILE [HZ ...]
"""

import json
import sys

import av
import numpy as np


def main():
    path, tones = sys.argv[1], [float(f) for f in sys.argv[2:]]
    out = {"streams": [], "pictures": [], "audio": {"window": 0.01, "tones": tones, "power": []}}
    with av.open(path) as container:
        out["format"] = container.format.name
        out["duration"] = container.duration / 1e6 if container.duration else None
        for s in container.streams:
            entry = {"type": s.type, "codec": s.codec_context.name}
            if s.type == "video":
                entry.update(width=s.codec_context.width, height=s.codec_context.height)
            if s.type == "audio":
                entry.update(rate=s.codec_context.sample_rate, channels=s.codec_context.channels)
            out["streams"].append(entry)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=48000)
        pcm = []
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                luma = frame.to_ndarray(format="gray")
                half = luma.shape[0] // 2
                out["pictures"].append([float(frame.time), float(luma[:half].mean()), float(luma[half:].mean())])
            else:
                for r in resampler.resample(frame):
                    pcm.append(r.to_ndarray().reshape(-1))
    pcm = np.concatenate(pcm) if pcm else np.zeros(0, np.float32)
    out["audio"]["seconds"] = len(pcm) / 48000
    n = 480
    window = np.hanning(n)
    t = np.arange(n) / 48000
    probes = [np.exp(-2j * np.pi * f * t) * window for f in tones]
    for k in range(len(pcm) // n):
        chunk = pcm[k * n : (k + 1) * n]
        out["audio"]["power"].append([float(abs(np.dot(chunk, p)) / n) for p in probes])
    print(json.dumps(out))


main()
