#!/usr/bin/env bash
# Installs the Debian packages tete needs to build, test and run on a
# machine without a GPU. Idempotent: does nothing when all are present.
#   mesa-vulkan-drivers, libvulkan1  Mesa's lavapipe: wgpu runs the WGSL shaders on the CPU
#   pkg-config, cmake                for -sys crates
#   libopus-dev                      Opus codec (WebRTC media, Ogg-Opus uploads)
#   espeak-ng                        text to phonemes for the voice, and test speech (run as a process, never linked)
#   pocketsphinx-testdata            real read speech (LibriVox clips) for the audio tests
#   opus-tools, flac, lame,          real encoders: the upload tests make Ogg-Opus, FLAC, MP3 and
#   vorbis-tools                     Ogg-Vorbis files with them
#   nasm                             openh264's assembly (without it the H.264 encoder builds ~3x slower)
#   libvpx-dev                       VP8 (libvpx) for browsers that send and take VP8
#   chromium, firefox-esr            real browsers for the meeting page's WebRTC tests
set -euo pipefail

packages=(pkg-config cmake libopus-dev espeak-ng mesa-vulkan-drivers libvulkan1 pocketsphinx-testdata opus-tools flac lame vorbis-tools nasm chromium libvpx-dev firefox-esr)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
