package io.streamscore.udfs;

/**
 * The rows of one key's OVER window, oldest first: timestamps plus one value, one flag byte and one id per row.
 *
 * <p>Flink's RANGE OVER operator accumulates rows in timestamp order and retracts the oldest ones as the window
 * moves, so appends go to the end and retractions almost always hit the front. Public fields with a default
 * constructor make this a structured type Flink can keep in state and checkpoint.
 */
public class WindowRows {
    public long[] ts = new long[8];
    public double[] value = new double[8];
    public byte[] flags = new byte[8];
    /** The row's event id where the aggregate needs it (TerminalWindows: the transaction id), else 0. */
    public long[] id = new long[8];
    public int n = 0;
    /** Newest timestamp that has left the window (-1: none): "previous event" when the window holds no older row. */
    public long lastRetracted = -1L;

    public void add(long t, double v, byte f) {
        add(t, v, f, 0L);
    }

    public void add(long t, double v, byte f, long rowId) {
        if (n == ts.length) {
            int cap = Math.max(8, n * 2);
            ts = java.util.Arrays.copyOf(ts, cap);
            value = java.util.Arrays.copyOf(value, cap);
            flags = java.util.Arrays.copyOf(flags, cap);
            id = java.util.Arrays.copyOf(id, cap);
        }
        // Keep timestamp order even if a row arrives out of order (the operator sorts by rowtime, so rarely).
        int i = n;
        while (i > 0 && ts[i - 1] > t) {
            ts[i] = ts[i - 1];
            value[i] = value[i - 1];
            flags[i] = flags[i - 1];
            id[i] = id[i - 1];
            i--;
        }
        ts[i] = t;
        value[i] = v;
        flags[i] = f;
        id[i] = rowId;
        n++;
    }

    public void remove(long t, double v, byte f) {
        remove(t, v, f, 0L);
    }

    public void remove(long t, double v, byte f, long rowId) {
        for (int i = 0; i < n; i++) {
            if (ts[i] == t && flags[i] == f && id[i] == rowId && Double.compare(value[i], v) == 0) {
                System.arraycopy(ts, i + 1, ts, i, n - i - 1);
                System.arraycopy(value, i + 1, value, i, n - i - 1);
                System.arraycopy(flags, i + 1, flags, i, n - i - 1);
                System.arraycopy(id, i + 1, id, i, n - i - 1);
                n--;
                lastRetracted = Math.max(lastRetracted, t);
                return;
            }
        }
    }

    /** The window's upper bound: the current row's timestamp (RANGE ... AND CURRENT ROW). */
    public long newest() {
        return n == 0 ? Long.MIN_VALUE : ts[n - 1];
    }

    public void clear() {
        n = 0;
        lastRetracted = -1L;
    }
}
