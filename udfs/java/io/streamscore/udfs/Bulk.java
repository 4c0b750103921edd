package io.streamscore.udfs;

import java.nio.ByteBuffer;

/** Whole-array copies in and out of a byte buffer (the state's serialisation: {@link FeatureStateSerializer}). */
final class Bulk {
    private Bulk() {
    }

    static void putLongs(ByteBuffer b, long[] a, int len) {
        b.asLongBuffer().put(a, 0, len);
        b.position(b.position() + len * 8);
    }

    static void putDoubles(ByteBuffer b, double[] a, int len) {
        b.asDoubleBuffer().put(a, 0, len);
        b.position(b.position() + len * 8);
    }

    /** The first {@code len} longs into a new array of {@code cap}. */
    static long[] getLongs(ByteBuffer b, int len, int cap) {
        long[] a = new long[cap];
        b.asLongBuffer().get(a, 0, len);
        b.position(b.position() + len * 8);
        return a;
    }

    static double[] getDoubles(ByteBuffer b, int len, int cap) {
        double[] a = new double[cap];
        b.asDoubleBuffer().get(a, 0, len);
        b.position(b.position() + len * 8);
        return a;
    }
}
