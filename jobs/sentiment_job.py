"""The sentiment job: `posts` -> sentiment per post -> `post-sentiment`, and per-topic 1-minute trends ->
`sentiment-trends`.

    Kafka `posts` (raw bytes, per-partition watermarks on the record time)
      -> pandas UDF decode + validate (dead letters -> `dead-letter`); SQL splits late events (-> `posts-late`)
      -> SQL view with rowtime = event_time and the source's watermark
      -> pandas UDF: tokenise the batch + TorchScript model through the native runtime (or VADER with
         `--scorer vader`), returning the encoded SentimentScore, the label and p_positive, computed ONCE per post
      -> back to a DataStream and again a view (`scored_v`, same rowtime and watermark), read by both outputs:
           * the encoded score -> `post-sentiment`
           * TUMBLE(1 minute) per topic: label counts and mean positivity -> SentimentTrend -> `sentiment-trends`
    All Kafka sinks are transactional (exactly-once, committed on checkpoints) unless configured otherwise.

Local MiniCluster: ``python jobs/sentiment_job.py``; a cluster: ``flink run -py jobs/sentiment_job.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.common import create_envs, create_kafka_source, kafka_sink_ddl, restore_settings  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from udfs.routing import route_table, typed_view  # noqa: E402
from udfs.sentiment import make_score_udf, make_trend_udf  # noqa: E402

JOB_NAME = "streamscore-sentiment"


def build(t_env, cfg, args):
    bootstrap = args.bootstrap
    create_kafka_source(t_env, cfg, table="posts_source", topic=args.source_topic, group_id=args.group_id,
                        bootstrap=bootstrap)
    for table, topic in (("sentiment_sink", args.out_topic), ("trends_sink", args.trends_topic),
                         ("late_sink", args.late_topic), ("dead_sink", args.dead_topic)):
        t_env.execute_sql(kafka_sink_ddl(cfg, table=table, topic=topic, bootstrap=bootstrap,
                                         txn_prefix=f"{args.group_id}-{table}"))

    late, dead, _ = route_table(t_env, source_table="posts_source", kind="social_post", view="posts_v",
                                limits=cfg.fraud, component="sentiment-job")

    t_env.create_temporary_function("score_sentiment", make_score_udf())
    t_env.create_temporary_function("encode_trend", make_trend_udf())
    scored = t_env.sql_query(
        "SELECT post_id, topic, event_time, score_sentiment(post_id, topic, event_time, produced_at, `text`) AS s "
        "FROM posts_v")
    # Materialise the scored stream once: both outputs below read this one DataStream, so the model runs once per
    # post whatever the planner does with the two queries. Watermarks pass through to_data_stream.
    flat = t_env.sql_query("SELECT post_id, topic, event_time, s.`value` AS `value`, s.label AS label, "
                           f"s.p_positive AS p_positive FROM {scored}")
    typed_view(t_env, t_env.to_data_stream(flat), "scored_v", "event_time")

    scores = t_env.sql_query("SELECT ENCODE(post_id, 'UTF-8') AS `key`, `value` FROM scored_v")
    win_ms = cfg.sentiment.window_minutes * 60_000
    trends = t_env.sql_query(f"""
        SELECT ENCODE(topic, 'UTF-8') AS `key`,
               encode_trend(topic, ws, ws + {win_ms}, n_neg, n_neu, n_pos, mean_pos) AS `value`
        FROM (
          SELECT topic,
                 MIN(event_time) - MOD(MIN(event_time), {win_ms}) AS ws,
                 SUM(CASE WHEN label = 'negative' THEN 1 ELSE 0 END) AS n_neg,
                 SUM(CASE WHEN label = 'neutral' THEN 1 ELSE 0 END) AS n_neu,
                 SUM(CASE WHEN label = 'positive' THEN 1 ELSE 0 END) AS n_pos,
                 AVG(p_positive) AS mean_pos
          FROM TABLE(TUMBLE(TABLE scored_v, DESCRIPTOR(rowtime), INTERVAL '{cfg.sentiment.window_minutes}' MINUTE))
          GROUP BY topic, window_start, window_end
        )""")
    st = t_env.create_statement_set()
    st.add_insert("sentiment_sink", scores)
    st.add_insert("trends_sink", trends)
    st.add_insert("late_sink", late)
    st.add_insert("dead_sink", dead)
    return st


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    t = cfg.topics
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=cfg.kafka.bootstrap_servers)
    ap.add_argument("--source-topic", default=t.posts)
    ap.add_argument("--out-topic", default=t.post_sentiment)
    ap.add_argument("--trends-topic", default=t.sentiment_trends)
    ap.add_argument("--late-topic", default=t.posts_late)
    ap.add_argument("--dead-topic", default=t.dead_letter)
    ap.add_argument("--group-id", default="streamscore-sentiment")
    ap.add_argument("--scorer", choices=("model", "vader"), default=cfg.sentiment.scorer,
                    help="the model (TorchScript, native runtime) or the VADER lexicon")
    ap.add_argument("--restore", default="", help="'latest' or a checkpoint path to resume from")
    args, _ = ap.parse_known_args(argv)
    # The UDF workers build their Config from the environment; this is how the choice reaches them.
    os.environ["STREAMSCORE_SENTIMENT__SCORER"] = args.scorer
    extra = {"table.local-time-zone": "UTC"}
    extra.update(restore_settings(cfg, JOB_NAME, args.restore))
    env, t_env = create_envs(cfg, job_name=JOB_NAME, extra=extra,
                             checkpoint_interval_ms=cfg.sentiment_checkpoint_interval_ms())
    build(t_env, cfg, args).execute().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
