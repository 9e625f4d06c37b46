# tokenspeech: `make demo` and `make test` work on a fresh machine with Python, apt and pip.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: espeak-ng (g2p, voices), sox/ffmpeg (audio I/O), opus-tools/codec2 (codec peers),
# flite (held-out voices, diphone training voice), festival + festvox-kallpc16k/kdlpc16k (diphone training
# voices), fortunes/wordnet-base (corpus text).
SYSTEM_PACKAGES := espeak-ng libespeak-ng1 sox ffmpeg flac opus-tools codec2 flite festival festvox-kallpc16k \
  festvox-kdlpc16k fortunes fortunes-min wordnet-base
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install system-deps clean-venv protos

install: system-deps $(STAMP)

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[teacher,eval,dev]"
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q

# Regenerate the committed gRPC stubs after editing proto/ (a test fails while they are stale).
protos: $(STAMP)
	$(PY) -m tokenspeech.serving.protogen

DEMO := .demo
TS := $(VENV)/bin/tokenspeech

demo: install
	$(TS) g2p "Dr. Smith paid \$$3.50 on May 1st, 1990."
	rm -rf $(DEMO)/corpus  # a fresh tiny corpus each run (a kept one may have been planned with another voice mix)
	$(TS) data build --out $(DEMO)/corpus --hours 0.01 --heldout 2 --no-progress
	$(TS) data card $(DEMO)/corpus
	@wav=$(DEMO)/corpus/$$($(PY) -c "import json; print(json.loads(open('$(DEMO)/corpus/train.jsonl').readline())['path'])"); \
	for kbps in 1.5 3 6; do \
	  echo "== tscodec at $$kbps kbps: $$wav"; \
	  $(TS) codec encode $$wav -o $(DEMO)/speech-$$kbps.tok --kbps $$kbps && \
	  $(TS) codec decode $(DEMO)/speech-$$kbps.tok -o $(DEMO)/speech-$$kbps.wav && \
	  $(TS) eval codec $$wav $(DEMO)/speech-$$kbps.wav --codec tscodec || exit 1; \
	done
	$(TS) synthesize "The quick brown fox jumps over the lazy dog. Speech from tokens, made on a CPU." \
	  -o $(DEMO)/hello.wav --decoder nar --seed 1
	$(TS) synthesize "Streaming speech arrives block by block." -o $(DEMO)/stream.wav --decoder semiar --stream --seed 1
	$(PY) samples/clients/demo_roundtrip.py "Speech from tokens, served over gRPC and heard again." \
	  -o $(DEMO)/roundtrip.wav

clean-venv:
	rm -rf $(VENV)
