package io.streamscore.udfs;

import org.apache.flink.types.Row;

/**
 * All per-customer rolling features from the rows of the longest window (30 days), computed in one pass
 * ({@link CustomerFeatures} keeps the rows and calls this once per timestamp).
 *
 * <p>Windows include rows exactly W earlier and every row sharing the current timestamp, as Flink's RANGE OVER
 * windows and pipelines/features.py (the pandas reference) do ({@link #features}); on arrival, the rows sharing it
 * that have arrived so far ({@link #featuresAt}). {@code prev_ts} is the newest timestamp before the
 * current one (-1 if none) and {@code same_ts} counts rows at the current timestamp (more than one: "seconds since
 * previous" is 0).
 *
 * <p>Result: ROW(cnt_5m, sum_5m, cnt_1h, sum_1h, cnt_1d, sum_1d, cnt_7d, sum_7d, cnt_30d, sum_30d, same_ts, prev_ts).
 */
final class CustomerWindows {
    /** Ascending; the rows older than the longest leave the window. */
    static final long[] WINDOWS_MS = {300_000L, 3_600_000L, 86_400_000L, 7 * 86_400_000L, 30 * 86_400_000L};
    /** Fields of the result row: a count and a sum per window, same_ts, prev_ts. */
    static final int ARITY = 2 * WINDOWS_MS.length + 2;

    private CustomerWindows() {
    }

    /** The features of the window's newest timestamp (every row sharing it counts: RANGE semantics). */
    static Row features(WindowRows acc) {
        return featuresAt(acc, acc.n - 1);
    }

    /**
     * The features of row {@code at}, over it and the rows before it: those with an older timestamp, and those with
     * the same one that joined the window before it (on arrival, the rows after it all have a newer timestamp).
     */
    static Row featuresAt(WindowRows acc, int at) {
        int k = WINDOWS_MS.length;
        long[] cnt = new long[k];
        double[] sum = new double[k];
        long t = acc.ts[at];
        long sameTs = 0;
        long prevTs = acc.lastRetracted;
        // Newest to oldest: window w holds the rows with ts >= t - W[w]; each window contains the smaller ones.
        int w = 0;
        for (int i = at; i >= 0; i--) {
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
