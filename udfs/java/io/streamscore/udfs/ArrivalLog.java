package io.streamscore.udfs;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;

/**
 * The order in which the feature functions saw their rows, on arrival: one line per row, for audits and for the
 * tests that replay that order through the reference (pipelines/features.py {@code arrival_window_features}).
 *
 * <p>Off unless the JVM runs with {@code -Dstreamscore.arrival-log=<folder>} (the local MiniCluster's JVM_ARGS);
 * then each function appends to {@code <folder>/<function>.log} lines of {@code key id time kind}, flushed at once.
 * A static final flag, so the JIT drops the calls when it is off.
 */
final class ArrivalLog {
    static final String PROPERTY = "streamscore.arrival-log";
    static final String DIR = System.getProperty(PROPERTY, "");
    static final boolean ON = !DIR.isEmpty();

    private static BufferedWriter terminal;
    private static BufferedWriter customer;

    private ArrivalLog() {
    }

    static synchronized void terminal(long terminalId, long txId, long time, boolean isTx) {
        terminal = write(terminal, "terminal", terminalId + " " + txId + " " + time + (isTx ? " tx" : " label"));
    }

    static synchronized void customer(long customerId, long txId, long time) {
        customer = write(customer, "customer", customerId + " " + txId + " " + time + " tx");
    }

    private static BufferedWriter write(BufferedWriter w, String name, String line) {
        try {
            if (w == null) {
                Path dir = Paths.get(DIR);
                Files.createDirectories(dir);
                w = Files.newBufferedWriter(dir.resolve(name + ".log"), StandardCharsets.UTF_8,
                        StandardOpenOption.CREATE, StandardOpenOption.APPEND);
            }
            w.write(line);
            w.newLine();
            w.flush();
            return w;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
