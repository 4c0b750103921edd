package io.streamscore.udfs;

import java.nio.ByteBuffer;

/**
 * The rows of one key's 30-day window, oldest first: timestamps plus one value, one flag byte and one id per row.
 *
 * <p>Rows are kept in timestamp order, rows of one timestamp in arrival order: at the watermark the feature
 * functions add them in timestamp order, on arrival a row out of order is inserted at its place. They leave from the
 * front as the window moves. Part of {@link FeatureState}, written by {@link FeatureStateSerializer}.
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

    public int add(long t, double v, byte f) {
        return add(t, v, f, 0L);
    }

    /** Inserts the row after every row with a timestamp up to {@code t}; returns its index. */
    public int add(long t, double v, byte f, long rowId) {
        if (n == ts.length) {
            int cap = Math.max(8, n * 2);
            ts = java.util.Arrays.copyOf(ts, cap);
            value = java.util.Arrays.copyOf(value, cap);
            flags = java.util.Arrays.copyOf(flags, cap);
            id = java.util.Arrays.copyOf(id, cap);
        }
        // Keep timestamp order whatever the caller does (the feature functions add in timestamp order).
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
        return i;
    }

    /** Drops the rows older than {@code limit} (the oldest come first), as a RANGE window retracts them. */
    public void evictBefore(long limit) {
        int k = 0;
        while (k < n && ts[k] < limit) {
            k++;
        }
        if (k == 0) {
            return;
        }
        lastRetracted = Math.max(lastRetracted, ts[k - 1]);
        System.arraycopy(ts, k, ts, 0, n - k);
        System.arraycopy(value, k, value, 0, n - k);
        System.arraycopy(flags, k, flags, 0, n - k);
        System.arraycopy(id, k, id, 0, n - k);
        n -= k;
    }

    /** How many rows are stamped after {@code t} (binary search: rows are in timestamp order). */
    public int countAfter(long t) {
        int lo = 0;
        int hi = n;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (ts[mid] <= t) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return n - lo;
    }

    /** The window's upper bound: the current row's timestamp (RANGE ... AND CURRENT ROW). */
    public long newest() {
        return n == 0 ? Long.MIN_VALUE : ts[n - 1];
    }

    /** A deep copy (the heap backend copies a key's state that an ongoing checkpoint still reads). */
    WindowRows copy() {
        WindowRows c = new WindowRows();
        c.ts = ts.clone();
        c.value = value.clone();
        c.flags = flags.clone();
        c.id = id.clone();
        c.n = n;
        c.lastRetracted = lastRetracted;
        return c;
    }

    /** The most bytes {@link #write} takes. */
    int maxBytes() {
        return 4 + 8 + n * 25 + 1;
    }

    /** The used rows only; ids only when some row has one (the terminal function's: customer rows are all 0). */
    void write(ByteBuffer b) {
        boolean ids = false;
        for (int i = 0; i < n && !ids; i++) {
            ids = id[i] != 0L;
        }
        b.putInt(n).putLong(lastRetracted);
        Bulk.putLongs(b, ts, n);
        Bulk.putDoubles(b, value, n);
        b.put(flags, 0, n);
        b.put((byte) (ids ? 1 : 0));
        if (ids) {
            Bulk.putLongs(b, id, n);
        }
    }

    static WindowRows read(ByteBuffer b) {
        WindowRows w = new WindowRows();
        int n = b.getInt();
        int cap = Math.max(8, n);
        w.n = n;
        w.lastRetracted = b.getLong();
        w.ts = Bulk.getLongs(b, n, cap);
        w.value = Bulk.getDoubles(b, n, cap);
        w.flags = new byte[cap];
        b.get(w.flags, 0, n);
        w.id = b.get() != 0 ? Bulk.getLongs(b, n, cap) : new long[cap];
        return w;
    }
}
