package io.streamscore.udfs;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.types.Row;

/**
 * Drives the windows the feature functions keep, on arrival, from lines on stdin, so that a test can compare them
 * with the Python reference (tests/unit/test_arrival_features.py) without a Flink job:
 * <pre>
 *   c CUSTOMER TIME AMOUNT          -> the customer features of that transaction as it arrives
 *   t TERMINAL TXID TIME FLAGS      -> a transaction (flags 1): its terminal features; a label (2, +4 if fraud)
 *                                      joins the window and prints nothing
 *   w WATERMARK                     -> rows older than the watermark minus the longest window leave every key
 * </pre>
 */
public final class WindowCheck {
    private WindowCheck() {
    }

    public static void main(String[] args) throws IOException {
        Map<Long, WindowRows> customers = new HashMap<>();
        Map<Long, WindowRows> terminals = new HashMap<>();
        long custLongest = CustomerWindows.WINDOWS_MS[CustomerWindows.WINDOWS_MS.length - 1];
        long termLongest = TerminalWindows.WINDOWS_MS[TerminalWindows.WINDOWS_MS.length - 1];
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, false, "UTF-8");
        StringBuilder sb = new StringBuilder();
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            String[] p = line.trim().split("\\s+");
            sb.setLength(0);
            switch (p[0]) {
                case "c": {
                    WindowRows w = customers.computeIfAbsent(Long.parseLong(p[1]), k -> new WindowRows());
                    int at = w.add(Long.parseLong(p[2]), Double.parseDouble(p[3]), (byte) 0);
                    append(sb.append('c'), CustomerWindows.featuresAt(w, at));
                    break;
                }
                case "t": {
                    WindowRows w = terminals.computeIfAbsent(Long.parseLong(p[1]), k -> new WindowRows());
                    byte flags = Byte.parseByte(p[4]);
                    int at = TerminalWindows.add(w, Long.parseLong(p[3]), flags, Long.parseLong(p[2]));
                    if ((flags & TerminalWindows.TX) == 0) {
                        continue;
                    }
                    append(sb.append('t'), TerminalWindows.featuresAt(w, at, 0L));
                    break;
                }
                case "w": {
                    long wm = Long.parseLong(p[1]);
                    customers.values().forEach(w -> w.evictBefore(wm - custLongest));
                    terminals.values().forEach(w -> w.evictBefore(wm - termLongest));
                    continue;
                }
                default:
                    throw new IllegalArgumentException("bad line: " + line);
            }
            out.println(sb);
        }
        out.flush();
    }

    private static void append(StringBuilder sb, Row r) {
        for (int i = 0; i < r.getArity(); i++) {
            sb.append(' ').append(r.getField(i));
        }
    }
}
