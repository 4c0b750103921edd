package io.streamscore.udfs;

import org.apache.flink.types.Row;

/**
 * Per-terminal features from the rows of the last 30 days, transactions and fraud labels together: for 1, 7 and 30
 * days, the number of transactions, of labels known, and of those labels that say fraud (the Fraud Detection
 * Handbook's terminal risk, "as known at t": a label counts from its label time). {@link TerminalFeatures} keeps
 * the rows and calls this once per timestamp.
 *
 * <p>Labels come from outside the job and may be crafted, so a label counts toward risk only if its transaction is
 * a row of this terminal's window (the job scored it here) and it is the first label of that transaction: the rest
 * (labels for unknown transactions, repeats) stay in the window uncounted and are counted as such
 * ({@link #ignoredLabelsAt}). {@link #add} decides it: for a label that arrives after its transaction, at once; for
 * one that arrives first (a fast replay reads the label topic ahead), when the transaction arrives; then the
 * earliest of its labels counts. The labelled transaction is at the same terminal at most the label delay earlier,
 * so it is still in the 30-day window if the job scored it. This replaced an interval join of labels with
 * transactions that cost 11% of the JVM's time.
 *
 * <p>{@link #featuresAt} gives ROW(cnt_1d, nlabels_1d, nfraud_1d, cnt_7d, nlabels_7d, nfraud_7d, cnt_30d,
 * nlabels_30d, nfraud_30d, the unknown-label count its caller passes).
 */
final class TerminalWindows {
    static final long[] WINDOWS_MS = {86_400_000L, 7 * 86_400_000L, 30 * 86_400_000L};
    static final byte TX = 1;
    static final byte LABEL = 2;
    static final byte FRAUD = 4;
    /** A label row that counts toward risk (see the class comment); set by {@link #add} only. */
    static final byte COUNTS = 8;

    private TerminalWindows() {
    }

    /**
     * Adds a transaction or label row of time {@code t} for transaction {@code id}, and decides which labels of that
     * transaction count: a label arriving after its transaction counts if no label of it is in the window yet; when
     * a transaction arrives after some of its labels, the earliest of them counts. Returns the row's index.
     */
    static int add(WindowRows acc, long t, byte flags, long id) {
        byte f = (byte) (flags & ~COUNTS);
        if ((f & TX) == 0) {
            if ((f & LABEL) != 0) {
                boolean known = false;
                boolean labelled = false;
                for (int j = 0; j < acc.n; j++) {
                    if (acc.id[j] == id) {
                        known |= (acc.flags[j] & TX) != 0;
                        labelled |= (acc.flags[j] & (TX | LABEL)) == LABEL;
                    }
                }
                if (known && !labelled) {
                    f |= COUNTS;
                }
            }
            return acc.add(t, 0.0, f, id);
        }
        int at = acc.add(t, 0.0, f, id);
        int first = -1;
        for (int j = 0; j < acc.n; j++) {
            if (j == at || acc.id[j] != id) {
                continue;
            }
            if ((acc.flags[j] & (TX | COUNTS)) != 0) {
                return at; // a repeated transaction id: its labels were decided when the first one arrived
            }
            if ((acc.flags[j] & LABEL) != 0 && first < 0) {
                first = j;
            }
        }
        if (first >= 0) {
            acc.flags[first] |= COUNTS;
        }
        return at;
    }

    /**
     * The features of row {@code at} over it and the rows before it (on arrival: the rows received so far up to its
     * timestamp), with {@code unknown} as the last field.
     */
    static Row featuresAt(WindowRows acc, int at, long unknown) {
        int k = WINDOWS_MS.length;
        long[] cnt = new long[k];
        long[] labels = new long[k];
        long[] frauds = new long[k];
        long t = acc.ts[at];
        int w = 0;
        for (int i = at; i >= 0; i--) {
            while (w < k && acc.ts[i] < t - WINDOWS_MS[w]) {
                w++;
            }
            if (w == k) {
                break;
            }
            byte f = acc.flags[i];
            cnt[w] += (f & TX) != 0 ? 1 : 0;
            labels[w] += (f & COUNTS) != 0 ? 1 : 0;
            frauds[w] += (f & (COUNTS | FRAUD)) == (COUNTS | FRAUD) ? 1 : 0;
        }
        for (int j = 1; j < k; j++) {
            cnt[j] += cnt[j - 1];
            labels[j] += labels[j - 1];
            frauds[j] += frauds[j - 1];
        }
        return Row.of(cnt[0], labels[0], frauds[0], cnt[1], labels[1], frauds[1], cnt[2], labels[2], frauds[2],
                unknown);
    }

    /**
     * The labels at time {@code t} that do not count: {unknown (their transaction is not a row of the window),
     * repeated (it is, and an earlier label of it counts)}.
     */
    static long[] ignoredLabelsAt(WindowRows acc, long t) {
        long[] ignored = new long[2];
        for (int i = 0; i < acc.n; i++) {
            if (acc.ts[i] != t || (acc.flags[i] & (LABEL | COUNTS)) != LABEL) {
                continue;
            }
            boolean seen = false;
            for (int j = 0; j < acc.n && !seen; j++) {
                seen = (acc.flags[j] & TX) != 0 && acc.id[j] == acc.id[i];
            }
            ignored[seen ? 1 : 0]++;
        }
        return ignored;
    }

}
