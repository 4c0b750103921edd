# Model training. `make train` (wired in the main Makefile) depends on these.
TRAIN_FRAUD_ARGS ?=

.PHONY: train-fraud
train-fraud: ## Train the fraud MLP + handbook RF baseline (Apr-May train, June test); writes artifacts/models/fraud/<version>
	$(PY) -m pipelines.train.fraud $(TRAIN_FRAUD_ARGS)
