package io.streamscore.udfs;

import java.nio.ByteBuffer;
import java.util.Arrays;

/**
 * Rows a feature function holds until the watermark passes their time, packed row-major: per row its timestamp,
 * {@code nl} longs and {@code nd} doubles (the same for every row). Part of {@link FeatureState}, written by
 * {@link FeatureStateSerializer}.
 */
public class PendingRows {
    public long[] ts = new long[0];
    public long[] l = new long[0];
    public double[] d = new double[0];
    public int n = 0;

    public void add(long t, long[] longs, double[] doubles) {
        int nl = longs.length;
        int nd = doubles.length;
        if (n == ts.length) {
            int cap = Math.max(4, n * 2);
            ts = Arrays.copyOf(ts, cap);
            l = Arrays.copyOf(l, cap * nl);
            d = Arrays.copyOf(d, cap * nd);
        }
        ts[n] = t;
        System.arraycopy(longs, 0, l, n * nl, nl);
        System.arraycopy(doubles, 0, d, n * nd, nd);
        n++;
    }

    /**
     * Moves the rows at time {@code t}, in arrival order, to the start of {@code outLongs}/{@code outDoubles}
     * (grown when needed, returned through the holder) and returns how many there were.
     */
    public int take(long t, int nl, int nd, Taken out) {
        int k = 0;
        int w = 0;
        for (int i = 0; i < n; i++) {
            if (ts[i] == t) {
                out.ensure(k + 1, nl, nd);
                System.arraycopy(l, i * nl, out.l, k * nl, nl);
                System.arraycopy(d, i * nd, out.d, k * nd, nd);
                k++;
            } else {
                if (w != i) {  // keep the others (those still ahead of the watermark), in order
                    ts[w] = ts[i];
                    System.arraycopy(l, i * nl, l, w * nl, nl);
                    System.arraycopy(d, i * nd, d, w * nd, nd);
                }
                w++;
            }
        }
        n = w;
        return k;
    }

    /** A deep copy (the heap backend copies a key's state that an ongoing checkpoint still reads). */
    PendingRows copy() {
        PendingRows c = new PendingRows();
        c.ts = ts.clone();
        c.l = l.clone();
        c.d = d.clone();
        c.n = n;
        return c;
    }

    /** The row widths, from the capacities: {@link #add} grows the three arrays together. */
    private int width(int len) {
        return ts.length == 0 ? 0 : len / ts.length;
    }

    /** The most bytes {@link #write} takes. */
    int maxBytes() {
        return 12 + n * 8 * (1 + width(l.length) + width(d.length));
    }

    /** The used rows only. */
    void write(ByteBuffer b) {
        int nl = width(l.length);
        int nd = width(d.length);
        b.putInt(n).putInt(nl).putInt(nd);
        Bulk.putLongs(b, ts, n);
        Bulk.putLongs(b, l, n * nl);
        Bulk.putDoubles(b, d, n * nd);
    }

    static PendingRows read(ByteBuffer b) {
        PendingRows p = new PendingRows();
        int n = b.getInt();
        int nl = b.getInt();
        int nd = b.getInt();
        p.n = n;
        p.ts = Bulk.getLongs(b, n, n);
        p.l = Bulk.getLongs(b, n * nl, n * nl);
        p.d = Bulk.getDoubles(b, n * nd, n * nd);
        return p;
    }

    /** Scratch space for {@link #take}: one per function instance, never in state. */
    public static final class Taken {
        long[] l = new long[0];
        double[] d = new double[0];

        void ensure(int rows, int nl, int nd) {
            if (l.length < rows * nl) {
                l = Arrays.copyOf(l, Math.max(rows * nl, l.length * 2));
            }
            if (d.length < rows * nd) {
                d = Arrays.copyOf(d, Math.max(rows * nd, d.length * 2));
            }
        }
    }
}
