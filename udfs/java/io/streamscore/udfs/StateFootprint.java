package io.streamscore.udfs;

import java.util.HashMap;

/**
 * The heap one key's feature state takes with the heap backend, for docs/architecture.md: builds {@code keys}
 * states of {@code rows} window rows each (held the way the functions hold them: a one-entry map view per key, in a
 * map keyed by the key), and prints the bytes per key and per million keys. Run with
 * {@code java -cp <udf classpath> io.streamscore.udfs.StateFootprint KEYS ROWS [terminal]}.
 */
public final class StateFootprint {
    private StateFootprint() {
    }

    private static long used() throws InterruptedException {
        Runtime r = Runtime.getRuntime();
        for (int i = 0; i < 4; i++) {
            System.gc();
            Thread.sleep(100);
        }
        return r.totalMemory() - r.freeMemory();
    }

    public static void main(String[] args) throws Exception {
        int keys = Integer.parseInt(args[0]);
        int rows = Integer.parseInt(args[1]);
        boolean terminal = args.length > 2 && args[2].equals("terminal");
        long before = used();
        HashMap<Long, HashMap<Integer, FeatureState>> backend = new HashMap<>();
        for (long k = 0; k < keys; k++) {
            FeatureState s = new FeatureState();
            for (int i = 0; i < rows; i++) {
                if (terminal) {
                    TerminalWindows.add(s.rows, 1_000L * i, TerminalWindows.TX, k * rows + i);
                } else {
                    s.rows.add(1_000L * i, 12.5, (byte) 0);
                }
            }
            HashMap<Integer, FeatureState> view = new HashMap<>(2);
            view.put(RollingFeatures.STATE_KEY, s);
            backend.put(k, view);
        }
        long after = used();
        double perKey = (after - before) / (double) keys;
        System.out.printf("%s keys=%d rows/key=%d: %.0f bytes/key, %.1f MiB per 1M keys%n",
                terminal ? "terminal" : "customer", keys, rows, perKey, perKey * 1e6 / (1 << 20));
        if (backend.size() != keys) {
            throw new AssertionError();
        }
    }
}
