# Sentiment pipeline: model training, replay, job and benchmark.
TRAIN_SENTIMENT_ARGS ?= --threads 2
SENTIMENT_REPLAY_ARGS ?= --rate 50 --burst-rate 500 --burst-every 30 --burst-seconds 5 --loop --rebase

$(SENTIMENT_LATEST): | $(STAMP)
	@$(MAKE) --no-print-directory train-sentiment

.PHONY: train-sentiment sentiment-model replay-posts sentiment-job bench-sentiment
sentiment-model: $(SENTIMENT_LATEST) ## Train the sentiment model only if no artifact exists yet
train-sentiment: ## Train the sentiment model (MiniLM, top 3 layers fine-tuned + calibrated head; bf16/int8 if within 0.5 pt; TorchScript); writes artifacts/models/sentiment/<version> and artifacts/metrics/sentiment.json
	$(PY) -m pipelines.train.sentiment $(TRAIN_SENTIMENT_ARGS)

replay-posts: ## Replay TweetEval + SST-2 dev texts into the posts topic (50/s with bursts of 500/s, looping)
	$(PY) -m pipelines.replay.posts $(SENTIMENT_REPLAY_ARGS)

sentiment-job: ## Run the sentiment job on the local MiniCluster (posts -> post-sentiment + sentiment-trends)
	$(PY) jobs/sentiment_job.py

bench-sentiment: ## Sentiment pipeline throughput (posts/s) and p99 post->sentiment latency; writes bench-results/sentiment.json
	$(PY) -m infra.bench.sentiment --out bench-results/sentiment.json
