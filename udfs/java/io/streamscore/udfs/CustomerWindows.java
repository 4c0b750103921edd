package io.streamscore.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.types.Row;

/**
 * All per-customer rolling features from one RANGE OVER window (the longest, 30 days).
 *
 * <p>A chain of one OVER operator per window costs a keyed exchange, a state lookup and timers per window; this
 * computes every window in one pass over the rows the 30-day window already holds. Windows include rows exactly W
 * earlier and every row sharing the current timestamp, as Flink's RANGE windows and pipelines/features.py do.
 * {@code prev_ts} is the newest timestamp before the current one (-1 if none) and {@code same_ts} counts rows at
 * the current timestamp (more than one: "seconds since previous" is 0).
 */
@FunctionHint(output = @DataTypeHint(
        "ROW<cnt_5m BIGINT, sum_5m DOUBLE, cnt_1h BIGINT, sum_1h DOUBLE, cnt_1d BIGINT, sum_1d DOUBLE, "
                + "cnt_7d BIGINT, sum_7d DOUBLE, cnt_30d BIGINT, sum_30d DOUBLE, same_ts BIGINT, prev_ts BIGINT>"))
public class CustomerWindows extends AggregateFunction<Row, WindowRows> {
    private static final long serialVersionUID = 1L;
    /** Ascending; the longest must equal the OVER window's range. */
    static final long[] WINDOWS_MS = {300_000L, 3_600_000L, 86_400_000L, 7 * 86_400_000L, 30 * 86_400_000L};

    @Override
    public WindowRows createAccumulator() {
        return new WindowRows();
    }

    public void accumulate(WindowRows acc, Long ts, Double amount) {
        acc.add(ts, amount, (byte) 0);
    }

    public void retract(WindowRows acc, Long ts, Double amount) {
        acc.remove(ts, amount, (byte) 0);
    }

    public void resetAccumulator(WindowRows acc) {
        acc.clear();
    }

    @Override
    public Row getValue(WindowRows acc) {
        int k = WINDOWS_MS.length;
        long[] cnt = new long[k];
        double[] sum = new double[k];
        long t = acc.newest();
        long sameTs = 0;
        long prevTs = acc.lastRetracted;
        // Newest to oldest: window w holds the rows with ts >= t - W[w]; each window contains the smaller ones.
        int w = 0;
        for (int i = acc.n - 1; i >= 0; i--) {
            long ts = acc.ts[i];
            if (ts == t) {
                sameTs++;
            } else if (prevTs < ts) {
                prevTs = ts;
            }
            while (w < k && ts < t - WINDOWS_MS[w]) {
                w++;
            }
            if (w == k) {
                break;
            }
            cnt[w]++;
            sum[w] += acc.value[i];
        }
        // Per-window tallies to cumulative (window w also holds every row of the windows before it).
        for (int j = 1; j < k; j++) {
            cnt[j] += cnt[j - 1];
            sum[j] += sum[j - 1];
        }
        return Row.of(cnt[0], sum[0], cnt[1], sum[1], cnt[2], sum[2], cnt[3], sum[3], cnt[4], sum[4], sameTs,
                prevTs);
    }
}
