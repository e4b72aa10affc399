# midillm-lite: `make install` sets up .venv, `make test` runs the suite (installing first), `make check` its fast lane.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.midillm-installed

.PHONY: install test check lint load bench bench-audio bench-batching bench-convert bench-layout bench-threads fuzz clean demo demo-infill demo-data demo-model

install: $(STAMP)

# The SoundFont synthesizer used where FluidSynth is not installed (midillm_lite/audio/synth.py). --no-deps: its
# wheel requires pyaudio for live playback, which midillm-lite never uses and which has no Linux/macOS wheels.
# Wheels: Linux x86-64, macOS arm64, Windows; elsewhere (a Raspberry Pi) pip builds it from source with the C compiler.
TINYSOUNDFONT := tinysoundfont>=0.3.5,<0.4

# The stamp depends on what shapes the environment, so editing any of them re-installs. The llama-cpp-python
# version is pyproject.toml's pin, which the script reads (one source).
$(STAMP): pyproject.toml scripts/install-llama.sh scripts/llama-runtime-only.cmake
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	scripts/install-llama.sh $(PY)
	$(PY) -m pip install --quiet -e '.[test,cluster]'
	$(PY) -m pip install --quiet --no-deps '$(TINYSOUNDFONT)'
	touch $@

# The whole suite, as CI runs it (.ci/run).
test: $(STAMP)
	$(VENV)/bin/pytest

# The edit loop: unit and property tests plus one tiny end-to-end run (convert, gen), no other model builds.
# tests/conftest.py says which tests are slow (a rule, not a list); README.md has both lanes' times.
check: $(STAMP)
	$(VENV)/bin/pytest -m "not slow or e2e"

# The fuzz harnesses (tests/fuzz/) with a large example budget: 20,000 per harness (2,000 for the real-model GGUF
# harnesses and 5,000 for the typed-key one, which cost more per run); about 15 minutes on 2 cores. Statistics
# per harness (examples, time) are printed at the end; RELIABILITY.md records them.
fuzz: $(STAMP)
	MIDILLM_FUZZ_EXAMPLES=20000 $(VENV)/bin/pytest tests/fuzz -q -p no:cacheprovider --hypothesis-show-statistics

# The serve load test: 60 requests, 8 at once, some clients leaving mid-stream and some cancelling, on the bundled
# demo model over loopback; checks nothing is lost and RSS stays flat; prints the figures RELIABILITY.md records.
load: $(STAMP)
	$(PY) scripts/load_serve.py --requests 60 --concurrency 8

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info

# Converts a full-size random-weight checkpoint (~2.7 GB, built in a temp dir) to every type; updates BENCHMARKS.md.
bench-convert: $(STAMP)
	$(PY) scripts/bench_convert.py --threads 1

# The reference path (transformers + torch, CPU wheel) lives in its own venv: neither the runtime nor the tests need torch.
REF_VENV := $(HOME)/.cache/midillm-lite/ref-venv
REF_STAMP := $(REF_VENV)/.installed

$(REF_STAMP):
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install --quiet torch==2.13.0 'transformers>=4.45' safetensors
	touch $@

# Generation throughput for n = 1, 2, 4, 8 on a full-size random-weight Q4_K_M model, against the reference's
# transformers path on the same weights; updates BENCHMARKS.md.
bench: $(STAMP) $(REF_STAMP)
	$(PY) scripts/bench_gen.py --full --write --steps 256 --reference-python $(REF_VENV)/bin/python

# Continuous batching (issue 17): 4 concurrent n=1 requests through the BatchScheduler against the same 4 one by
# one and one n=4 request, time to first token under load, overhead per step; 128 tokens each on the full-size
# Q4_K_M that `make bench` caches (built here if missing); updates BENCHMARKS.md ("Continuous batching").
bench-batching: $(STAMP)
	$(PY) scripts/bench_batching.py --full --write --steps 128

# Generation tok/s for 1, cores-1 and cores threads, quiet and beside busy-loop processes (one per half the cores,
# one per core), with libgomp's spinning wait policy and the passive one midillm-lite uses; demo and full-size
# Q4_K_M (built once by bench_gen.py's cache); updates BENCHMARKS.md ("Threads").
bench-threads: $(STAMP)
	$(PY) scripts/bench_threads.py --write

# The midi-head layout against the standard one (Q4_K_M and Q8_0, n = 1 and 4, 128 tokens, best of 2 fresh
# processes each, 2 threads) on the full-size random-weight models `make bench` caches (built here if missing);
# updates BENCHMARKS.md's "Layouts" section.
bench-layout: $(STAMP)
	$(PY) scripts/bench_layout.py --write --steps 128 --repeats 2 --threads 2

# Audio render speed (x real time) and peak RSS for a 100 s, 16-instrument piece, per synthesizer and soundfont
# installed here; prints BENCHMARKS.md's "Audio" table.
bench-audio: $(STAMP)
	$(PY) scripts/bench_audio.py

# --- the bundled demo model (issue 5) -----------------------------------------------------------------------
# `make demo`: the main job on a fresh clone: generate from the bundled demo model into ./midillm-out/.
# --seconds 90: slow music reaches the 100 s end of AMT's arrival times before 2,046 tokens, and the demo never saw
# what comes after it (see its card). The prompt is one for which the demo rarely stacks chords past anything in its
# data; its card measures how often that happens, for this prompt and others (chorales stack most).
DEMO_PROMPT ?= A gentle piece for solo piano.
demo: $(STAMP)
	$(VENV)/bin/midillm-lite gen "$(DEMO_PROMPT)" --model midillm-demo-q8_0 -n 4 --seconds 90

# `make demo-infill`: `make demo`'s second step. Re-writes 20-35 s of the newest output under ./midillm-out/ (running
# `make demo` first when there is none), keeping every other note; gen prints where the files are. The demo model
# learnt AMT's controls (README, "Infilling and accompaniment"): the notes after the span are anticipated 5 s ahead.
DEMO_SPAN ?= --from 20 --to 35
demo-infill: $(STAMP)
	@src=$$(ls -t midillm-out/*/gen_*.mid 2>/dev/null | head -n 1); \
	if [ -z "$$src" ]; then $(MAKE) demo && src=$$(ls -t midillm-out/*/gen_*.mid | head -n 1); fi; \
	echo "re-writing $(DEMO_SPAN) of $$src"; \
	$(VENV)/bin/midillm-lite gen "$(DEMO_PROMPT)" --model midillm-demo-q8_0 -n 2 --infill "$$src" $(DEMO_SPAN)

# Training needs torch, music21 and matplotlib: the [train] extra, installed only for these targets.
TRAIN_STAMP := $(VENV)/.midillm-train-installed
$(TRAIN_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[train]'
	touch $@

DEMO_DATA := build/demo/data/dataset.npz
# The share of training windows that also get a copy in anticipation mode (demo/data.py); after changing it,
# `make -B demo-data`.
DEMO_ANTICIPATION_SHARE ?= 1.0
$(DEMO_DATA): $(TRAIN_STAMP) demo/data.py demo/captions.py midillm_lite/amt/anticipation.py
	$(PY) -m demo.data --anticipation-share $(DEMO_ANTICIPATION_SHARE)

# About 10 minutes on 2 cores: music21 corpus -> MIDI -> AMT events with captions, into build/demo/data/; each
# training window autoregressive, plus a copy in AMT's anticipation mode (controls, laid out by
# midillm_lite/amt/anticipation.py).
demo-data: $(DEMO_DATA)

# The first release's demo network (models/midillm-demo-q8_0.gguf at commit 7e8ce7a: the autoregressive windows
# alone, 37.7 min on 2 cores), which demo-model continues; read from the repository's history (a shallow clone
# needs `git fetch --unshallow` first).
# demo/card.py's BASE_COMMIT names the same commit on the card.
DEMO_BASE_COMMIT := 7e8ce7a
DEMO_BASE := build/demo/midillm-demo-q8_0-$(DEMO_BASE_COMMIT).gguf
$(DEMO_BASE):
	@mkdir -p $(@D)
	@git cat-file -e $(DEMO_BASE_COMMIT) 2>/dev/null || \
		{ echo "demo-model continues commit $(DEMO_BASE_COMMIT)'s demo model, not in this clone's history (git fetch --unshallow)" >&2; exit 1; }
	git show $(DEMO_BASE_COMMIT):models/midillm-demo-q8_0.gguf > $@.tmp && mv $@.tmp $@ || { rm -f $@.tmp; exit 1; }

# About two hours of training on 2 cores, in five stages that continue the first release's network: all windows,
# anticipated copies included, at a lower peak learning rate than the first release's (65 min); the same again
# (28 min); then two stages whose loss also holds the network's predictions on the autoregressive windows near the
# first release's (`--teacher`: KL from its frozen predictions), so that learning the controls does not cost the
# instrument words (21 min, then 8 with the span copies drawn twice); then 128 samples of that network's own music
# (`demo.own_samples`, 6 min) and a last stage that also distils the first release on them (`--own-samples`, 12
# min): in its own free-running music the fourth stage's network strays into other instruments, where no data window
# asks the teacher. Then export a Hugging Face folder, `midillm-lite convert` it (F32, Q8_0, Q4_K_M), evaluate
# (infilling and accompaniment included), and write models/midillm-demo-q8_0.gguf, its card and plots, and
# BENCHMARKS.md's fidelity section. It replaces the shipped model: `git checkout models/ BENCHMARKS.md` unless yours
# does better. The shipped model is this recipe's own run (y2 in BENCHMARKS.md, "Demo model: anticipation retrains").
DEMO_TRAIN := build/demo
demo-model: $(DEMO_DATA) $(DEMO_BASE)
	$(PY) -m demo.train --init $(DEMO_BASE) --lr 1e-3 --steps 3000 --max-minutes 65 --out $(DEMO_TRAIN)/train-1
	$(PY) -m demo.train --init $(DEMO_TRAIN)/train-1/model.pt --lr 3e-4 --steps 600 --seed 1 --out $(DEMO_TRAIN)/train-2
	$(PY) -m demo.train --init $(DEMO_TRAIN)/train-2/model.pt --teacher $(DEMO_BASE) --teacher-weight 2 --lr 3e-4 \
		--steps 300 --seed 6 --max-minutes 22 --out $(DEMO_TRAIN)/train-3
	$(PY) -m demo.train --init $(DEMO_TRAIN)/train-3/model.pt --teacher $(DEMO_BASE) --teacher-weight 2 \
		--repeat span=2 --lr 3e-4 --steps 180 --seed 7 --max-minutes 11 --out $(DEMO_TRAIN)/train-4
	$(PY) -m demo.export --checkpoint $(DEMO_TRAIN)/train-4/model.pt
	$(PY) -m demo.own_samples models/midillm-demo-q8_0.gguf --out $(DEMO_TRAIN)/own-samples.npz
	$(PY) -m demo.train --init $(DEMO_TRAIN)/train-4/model.pt --teacher $(DEMO_BASE) --teacher-weight 2 \
		--repeat span=2 --own-samples $(DEMO_TRAIN)/own-samples.npz --own-weight 1 --lr 2e-4 --steps 120 --seed 9 \
		--max-minutes 14 --out $(DEMO_TRAIN)/train
	$(PY) -m demo.export
	$(PY) -m demo.evaluate
	$(PY) -m demo.card
