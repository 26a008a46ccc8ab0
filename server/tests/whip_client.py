#!/usr/bin/env python3
"""A WebRTC peer no one here wrote (aiortc) joining a tete conversation over
WHIP, for the edge's tests.

It sends a WAV file as its microphone and a 320x240 camera (the top half
bright, the bottom dark; or a still image, 480x480), opens the data channel and sends the messages
given, records the replica's audio and video, then leaves with DELETE.
Prints one JSON object: whether it connected, the replica audio it received
(seconds, RMS, zero-crossing frequency), the video (frames, size, mean luma
of the top and bottom halves of the last frame), the data-channel messages
it got, and the HTTP statuses of the join and the leave.

aioice gathers host candidates on every interface but loopback, and aiortc
asks a public STUN server by default; the tests send packets to 127.0.0.1
only, so the address list is replaced by 127.0.0.1 alone and no ICE server
is configured.

    pip install aiortc
    python3 whip_client.py URL WAV SECONDS [--token T] [--message JSON ...] [--camera IMAGE]
"""

import argparse
import asyncio
import json
import urllib.error
import urllib.request

import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class Camera(VideoStreamTrack):
    """320x240, top half bright, bottom half dark; or a still image."""

    def __init__(self, image_path=None):
        super().__init__()
        if image_path:
            with av.open(image_path) as still:
                picture = next(still.decode(video=0))
            self.image = picture.reformat(width=480, height=480, format="rgb24").to_ndarray()
        else:
            self.image = np.zeros((240, 320, 3), np.uint8)
            self.image[:120] = 220
            self.image[120:] = 30

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def onsets(pictures, sounds):
    """When the top of the picture turns bright, and when the sound turns
    loud (10 ms windows), each on its own track's RTP clock in seconds."""
    seen = [t for (p, a), (t, b) in zip(pictures, pictures[1:]) if a < 125 <= b]
    windows = []
    for t, rate, pcm in sounds:
        n = rate // 100
        for k in range(len(pcm) // n):
            windows.append((t + k * n / rate, float(np.sqrt(np.mean(pcm[k * n : (k + 1) * n] ** 2)))))
    loud = max((r for _, r in windows), default=0.0)
    heard = [t for (_, a), (t, b) in zip(windows, windows[1:]) if a < loud / 2 <= b]
    return {"seen": seen, "heard": heard}


def answered_video_codecs(sdp):
    """The codecs of the answer's video section (what the edge may send), rtx left out."""
    section, names = False, []
    for line in sdp.splitlines():
        if line.startswith("m="):
            section = line.startswith("m=video")
        elif section and line.startswith("a=rtpmap:"):
            name = line.split()[1].split("/")[0]
            if name.lower() != "rtx" and name not in names:
                names.append(name)
    return names


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("wav")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--token")
    parser.add_argument("--message", action="append", default=[])
    parser.add_argument("--camera", help="a still image to show as the camera")
    parser.add_argument("--video-codec", help="offer only this video codec (vp8, h264)")
    args = parser.parse_args()

    # No ICE servers: aiortc's default is a public STUN server.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    player = MediaPlayer(args.wav)
    pc.addTrack(player.audio)
    pc.addTrack(Camera(args.camera))
    if args.video_codec:
        wanted = ("video/" + args.video_codec.lower(), "video/rtx")
        codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in wanted]
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.setCodecPreferences(codecs)
    channel = pc.createDataChannel("tete")
    received_messages = []
    channel.on("message", lambda m: received_messages.append(m if isinstance(m, str) else m.decode()))
    samples = []
    # (RTP time in seconds, what it showed) of each picture and sound, for
    # the audio/video alignment: the top half's luma, the 20 ms of samples.
    pictures, sounds = [], []
    video = {"frames": 0}
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            connected.set()

    @pc.on("track")
    def on_track(track):
        async def pull_video():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                luma = frame.to_ndarray(format="gray")
                half = luma.shape[0] // 2
                if frame.pts is not None:
                    pictures.append((float(frame.pts * frame.time_base), float(luma[:half].mean())))
                video.update(
                    frames=video["frames"] + 1,
                    width=frame.width,
                    height=frame.height,
                    top_luma=float(luma[:half].mean()),
                    bottom_luma=float(luma[half:].mean()),
                )

        if track.kind == "video":
            asyncio.ensure_future(pull_video())
            return

        async def pull():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                pcm = frame.to_ndarray().astype(np.float32).reshape(-1) / 32768.0
                if frame.layout.name == "stereo":
                    pcm = pcm.reshape(-1, 2).mean(axis=1)
                samples.append((frame.sample_rate, pcm))
                if frame.pts is not None:
                    sounds.append((float(frame.pts * frame.time_base), frame.sample_rate, pcm))

        asyncio.ensure_future(pull())

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    status, response_headers, answer = await asyncio.to_thread(
        http, "POST", args.url, pc.localDescription.sdp.encode(), headers
    )
    result = {"join_status": status}
    if status != 201:
        result["join_body"] = answer
        print(json.dumps(result))
        await pc.close()
        return
    location = response_headers.get("Location") or response_headers.get("location")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    result["video_codecs"] = answered_video_codecs(answer)
    try:
        await asyncio.wait_for(connected.wait(), 15)
        result["connected"] = True
    except asyncio.TimeoutError:
        result["connected"] = False
    for _ in range(50):
        if channel.readyState == "open":
            break
        await asyncio.sleep(0.1)
    for message in args.message:
        channel.send(message)
    await asyncio.sleep(args.seconds)

    base = args.url.split("/c/")[0]
    status, _, _ = await asyncio.to_thread(http, "DELETE", base + location)
    result["leave_status"] = status
    await pc.close()

    rate = samples[0][0] if samples else 48000
    pcm = np.concatenate([s for _, s in samples]) if samples else np.zeros(0, np.float32)
    # The start is the jitter buffer filling: judge the steady part.
    steady = pcm[len(pcm) // 4 :]
    crossings = np.count_nonzero(np.diff(np.signbit(steady).astype(np.int8))) if len(steady) else 0
    result.update(
        {
            "audio_seconds": len(pcm) / rate,
            "audio_rms": float(np.sqrt(np.mean(steady**2))) if len(steady) else 0.0,
            "audio_hz": crossings / 2 / (len(steady) / rate) if len(steady) else 0.0,
            "video": video,
            "messages": received_messages,
            "onsets": onsets(pictures, sounds),
        }
    )
    print(json.dumps(result))


asyncio.run(main())
