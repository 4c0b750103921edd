package io.streamscore.udfs;

import java.time.Instant;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code watermark_guard(kafka_ts, max_future_ms)}: the time a Kafka record may move its partition's watermark to,
 * used in the source's WATERMARK expression (jobs/common.py kafka_source_ddl).
 *
 * <p>A record stamped ahead of the wall clock counts as stamped now, and one more than {@code max_future_ms} ahead
 * (fraud.max_future_ms: the decoder makes it a dead letter) not at all (null: the watermark stays where it was).
 * Without it one record stamped an hour ahead, which the broker accepts (log.message.timestamp.after.max.ms),
 * would move the watermark an hour on and send every record of that hour to the late topic. Records in the past,
 * a replay's included, are unchanged.
 *
 * <p>It reads the clock but says it is deterministic (the default): the planner pushes only deterministic
 * watermark expressions into the Kafka source, which keeps one watermark per partition. The clock here only ever
 * lowers a record's contribution, so a watermark computed with it is never ahead of one computed without it.
 */
public class WatermarkGuard extends ScalarFunction {
    private static final long serialVersionUID = 1L;

    public @DataTypeHint("TIMESTAMP_LTZ(3)") Instant eval(@DataTypeHint("TIMESTAMP_LTZ(3)") Instant ts,
                                                          Long maxFutureMs) {
        if (ts == null) {
            return null;
        }
        return guard(ts.toEpochMilli(), System.currentTimeMillis(), maxFutureMs == null ? 0L : maxFutureMs);
    }

    static Instant guard(long tsMs, long nowMs, long maxFutureMs) {
        if (tsMs <= nowMs) {
            return Instant.ofEpochMilli(tsMs);
        }
        return tsMs - nowMs > maxFutureMs ? null : Instant.ofEpochMilli(nowMs);
    }
}
