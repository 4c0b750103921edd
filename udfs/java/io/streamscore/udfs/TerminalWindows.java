package io.streamscore.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.types.Row;

/**
 * Per-terminal features from one RANGE OVER window (30 days) over transactions and fraud labels together: for 1,
 * 7 and 30 days, the number of transactions, of labels known, and of those labels that say fraud (the Fraud
 * Detection Handbook's terminal risk, "as known at t": a label counts from its label time).
 *
 * <p>It also finds labels for transactions the window has not seen (never sent, or routed away as late): the
 * labelled transaction is at the same terminal at most the label delay earlier, so it is still in the 30-day window
 * if the job scored it. A RANGE window gives every row of one timestamp the same value, so the count is of the
 * unknown labels at the newest timestamp, reported on each of its rows; the job counts it once per (terminal,
 * timestamp). This replaced an interval join of labels with transactions that cost 11% of the JVM's time.
 */
@FunctionHint(output = @DataTypeHint(
        "ROW<cnt_1d BIGINT, nlabels_1d BIGINT, nfraud_1d BIGINT, cnt_7d BIGINT, nlabels_7d BIGINT, "
                + "nfraud_7d BIGINT, cnt_30d BIGINT, nlabels_30d BIGINT, nfraud_30d BIGINT, unknown_labels BIGINT>"))
public class TerminalWindows extends AggregateFunction<Row, WindowRows> {
    private static final long serialVersionUID = 1L;
    static final long[] WINDOWS_MS = {86_400_000L, 7 * 86_400_000L, 30 * 86_400_000L};
    static final byte TX = 1;
    static final byte LABEL = 2;
    static final byte FRAUD = 4;

    @Override
    public WindowRows createAccumulator() {
        return new WindowRows();
    }

    private static byte flags(Integer isTx, Integer isLabel, Integer isFraud) {
        return (byte) ((isTx != null && isTx != 0 ? TX : 0) | (isLabel != null && isLabel != 0 ? LABEL : 0)
                | (isFraud != null && isFraud != 0 ? FRAUD : 0));
    }

    public void accumulate(WindowRows acc, Long ts, Integer isTx, Integer isLabel, Integer isFraud, Long txId) {
        acc.add(ts, 0.0, flags(isTx, isLabel, isFraud), txId == null ? 0L : txId);
    }

    public void retract(WindowRows acc, Long ts, Integer isTx, Integer isLabel, Integer isFraud, Long txId) {
        acc.remove(ts, 0.0, flags(isTx, isLabel, isFraud), txId == null ? 0L : txId);
    }

    public void resetAccumulator(WindowRows acc) {
        acc.clear();
    }

    @Override
    public Row getValue(WindowRows acc) {
        int k = WINDOWS_MS.length;
        long[] cnt = new long[k];
        long[] labels = new long[k];
        long[] frauds = new long[k];
        long t = acc.newest();
        int w = 0;
        for (int i = acc.n - 1; i >= 0; i--) {
            while (w < k && acc.ts[i] < t - WINDOWS_MS[w]) {
                w++;
            }
            if (w == k) {
                break;
            }
            byte f = acc.flags[i];
            cnt[w] += (f & TX) != 0 ? 1 : 0;
            labels[w] += (f & LABEL) != 0 ? 1 : 0;
            frauds[w] += (f & FRAUD) != 0 ? 1 : 0;
        }
        for (int j = 1; j < k; j++) {
            cnt[j] += cnt[j - 1];
            labels[j] += labels[j - 1];
            frauds[j] += frauds[j - 1];
        }
        return Row.of(cnt[0], labels[0], frauds[0], cnt[1], labels[1], frauds[1], cnt[2], labels[2], frauds[2],
                unknownLabelsAtNewest(acc));
    }

    /** Labels at the newest timestamp whose transaction is not a row of the window. */
    static long unknownLabelsAtNewest(WindowRows acc) {
        long t = acc.newest();
        long unknown = 0;
        for (int i = acc.n - 1; i >= 0 && acc.ts[i] == t; i--) {
            if ((acc.flags[i] & LABEL) == 0) {
                continue;
            }
            boolean seen = false;
            for (int j = 0; j < acc.n && !seen; j++) {
                seen = (acc.flags[j] & TX) != 0 && acc.id[j] == acc.id[i];
            }
            unknown += seen ? 0 : 1;
        }
        return unknown;
    }
}
