# The two commands of the README:
#   make demo   set everything up (venv, packages, Neo4j runtime) and run the main job on the bundled data
#   make test   set everything up and run the test suite (what CI runs, via .ci/run)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data
DATASET ?= beibei
STAMP  := $(VENV)/.graphrec-installed
TORCH  ?= 2.13.0
# PyPI's Linux torch wheel pulls ~3 GB of CUDA libraries; the CPU wheel is preferred where reachable.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
LAUNCHER := neo4j-runtime/target/classes/graphrec/Launcher.class

.PHONY: setup java demo test bench-ingest clean-state

setup: $(STAMP) $(LAUNCHER)

$(STAMP): pyproject.toml
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

demo: setup
	$(BIN)/graphrec ingest --dataset $(DATASET) --source $(DATA)/$(DATASET) --config configs/$(DATASET).yaml
	$(BIN)/graphrec inspect --dataset $(DATASET)

test: setup
	$(BIN)/python -m pytest -q

bench-ingest: setup
	$(BIN)/python bench/ingest.py

clean-state:
	-$(BIN)/graphrec neo4j stop
	rm -rf .graphrec
