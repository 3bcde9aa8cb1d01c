# The two commands of the README:
#   make demo   set everything up (venv, packages, Neo4j runtime) and run the main job on Beibei, found in
#               $GRAPHREC_DATA (default ../shared/data) or the cache, else downloaded and verified
#   make test   set everything up and run the test suite (what CI runs, via .ci/run)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATASET ?= beibei
STAMP  := $(VENV)/.graphrec-installed
TORCH  ?= 2.13.0
# PyPI's Linux torch wheel pulls ~3 GB of CUDA libraries; the CPU wheel is preferred where reachable.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
LAUNCHER := neo4j-runtime/target/classes/graphrec/Launcher.class

.PHONY: setup java demo data-check test bench-ingest bench-export bench-propagation bench-gpu clean-state

setup: $(STAMP) $(LAUNCHER)

# setup.py and the C file: the compiled product is rebuilt when they change
$(STAMP): pyproject.toml setup.py graphrec/_native.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null \
	  || $(BIN)/pip install -q "torch==$(TORCH)" --index-url $(TORCH_CPU_INDEX) --timeout 15 --retries 0 \
	  || { echo "CPU torch wheel not reachable; installing torch $(TORCH) from PyPI (with CUDA libraries)"; \
	       $(BIN)/pip install -q "torch==$(TORCH)"; }
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# A JDK 17+ and Maven build the Neo4j runtime; install them from Debian's packages if missing (needs root).
java:
	@command -v javac >/dev/null && command -v mvn >/dev/null || { \
	  echo "installing a JDK and Maven (apt-get) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven; }

$(LAUNCHER): neo4j-runtime/pom.xml neo4j-runtime/src/main/java/graphrec/Launcher.java $(STAMP) | java
	$(BIN)/graphrec neo4j install

DEMO_RUN ?= .graphrec/runs/$(DATASET)-hpmr-demo
DEMO_RANK ?= .graphrec/runs/$(DATASET)-mmoe-demo
DEMO_USERS ?= --user 0 --user 1

# Before the long setup, with the standard library only: is the data set here, or can it be downloaded?
data-check:
	$(PYTHON) -m graphrec.datasets check $(DATASET)

demo: data-check setup
	$(BIN)/graphrec ingest --dataset $(DATASET) --config configs/$(DATASET).yaml
	$(BIN)/graphrec inspect --dataset $(DATASET)
	$(BIN)/graphrec export --dataset $(DATASET)
	rm -rf $(DEMO_RUN)
	$(BIN)/graphrec train --model hpmr --dataset $(DATASET) --config configs/$(DATASET).yaml \
	  --set train.epochs=5 --set train.eval_every=5 --run $(DEMO_RUN)
	$(BIN)/graphrec evaluate --run $(DEMO_RUN) --ks 10,50 --sampled
	$(BIN)/graphrec recommend --run $(DEMO_RUN) $(DEMO_USERS) -k 5 --write-back
	rm -rf $(DEMO_RANK)
	$(BIN)/graphrec train --model mmoe --recall-run $(DEMO_RUN) --config configs/$(DATASET).yaml \
	  --set ranking.epochs=1 --run $(DEMO_RANK)
	$(BIN)/graphrec recommend --run $(DEMO_RANK) $(DEMO_USERS) -k 5

test: setup
	$(BIN)/ruff check graphrec ingest tests bench
	$(BIN)/python -m pytest -q

bench-ingest: setup
	$(BIN)/python bench/ingest.py

bench-export: setup
	$(BIN)/python bench/export.py

bench-propagation: setup
	$(BIN)/python bench/propagation.py

# The GPU check's bundle (snapshots, resolved settings, a recall run); bench/gpu.py prints the one
# command to run with it on the GPU machine.
bench-gpu: setup
	$(BIN)/python bench/gpu.py bundle

clean-state:
	-$(BIN)/graphrec neo4j stop
	rm -rf .graphrec
