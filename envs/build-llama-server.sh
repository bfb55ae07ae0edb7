#!/usr/bin/env bash
# Build llama.cpp's own HTTP server (`llama-server`) once per machine, from the llama.cpp sources
# vendored in the llama-cpp-python sdist that `make setup` builds its wheel from: the same
# llama.cpp version and the same portable CPU flags as the embedded server, nothing downloaded
# at run time. One statically linked file, cached; later setups find it and return at once.
#
#   envs/build-llama-server.sh VERSION CACHE_DIR PYTHON "GGML_FLAGS"
#
# VERSION: llama-cpp-python's (its sdist carries the llama.cpp sources); CACHE_DIR: where
# `llama-server` is kept; PYTHON: the interpreter whose pip downloads the sdist; GGML_FLAGS:
# the CMake flags of the wheel (portable, or the build dies with SIGILL on other CPUs).
set -euo pipefail

version=$1 cache=$2 python=$3 flags=$4
binary=$cache/llama-server

if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
  echo "Using the cached llama-server in $cache"
  exit 0
fi
command -v cmake >/dev/null || {
  echo "building llama-server needs cmake (Debian: apt-get install cmake; or pip install cmake)" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "Building llama-server from llama-cpp-python $version's llama.cpp with $flags (about 5 minutes on 2 cores)"
"$python" -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src=$work/llama_cpp_python-$version/vendor/llama.cpp

# shellcheck disable=SC2086  # the flags are several words
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF $flags >"$work/configure.log" 2>&1 ||
  { tail -30 "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log" >&2; exit 1; }

mkdir -p "$cache"
cp "$work/build/bin/llama-server" "$binary.tmp"
"$binary.tmp" --version >/dev/null 2>&1 || {
  echo "the llama-server just built does not run: $("$binary.tmp" --version 2>&1 | tail -3)" >&2
  rm -f "$binary.tmp"
  exit 1
}
mv "$binary.tmp" "$binary"
echo "Built $binary"
