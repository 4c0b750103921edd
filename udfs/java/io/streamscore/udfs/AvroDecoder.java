package io.streamscore.udfs;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.types.Row;

/**
 * Decodes and validates one kind of Avro single-object record (the Avro spec's {@code C3 01} marker, the writer
 * schema's 8-byte CRC-64-AVRO fingerprint, the binary body) into a row of {@code reason}, {@code error} and the
 * kind's fields: the JVM twin of udfs/routing.py's {@code BatchDecoder}, which stays the reference (the tests feed
 * both the same good, evolved and broken records and compare every verdict and field).
 *
 * <p>The job's first Python hop used to be the decoder alone; in the JVM the records go straight from the Kafka
 * source to the SQL windows. The writer schemas come from {@code avro-writers.tsv}, which the jar build derives
 * from schemas/*.avsc (pipelines/serde.py {@code java_schema_index}): one line per writer with its fingerprint, full
 * name and fields. A writer of the kind's record name is read field by field (older writers resolve by field name,
 * with numeric promotion); a writer of another record cannot be read as this one: "corrupt-avro", as fastavro says.
 * Nothing throws out of {@link #decode}: one bad record never fails the job. Every length and varint is checked
 * against the bytes left before it is used (a length is compared with the remainder, never added to a position,
 * so a crafted length near {@code Long.MAX_VALUE} cannot wrap around), and any Throwable that still escapes the
 * parser or the kind's rules (a bug of ours) becomes the verdict "internal-error" with its message: the record goes
 * to the dead-letter topic like any other bad record.
 */
public abstract class AvroDecoder extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    static final int HEADER_LEN = 10;

    static final byte T_NULL = 0, T_BOOLEAN = 1, T_INT = 2, T_LONG = 3, T_FLOAT = 4, T_DOUBLE = 5, T_BYTES = 6,
            T_STRING = 7, T_OTHER = 8;

    /** How to read one writer's records: its field types in order and, per field, the output slot (-1: skip). */
    static final class Plan {
        final byte[] types;
        final int[] slot;

        Plan(byte[] types, int[] slot) {
            this.types = types;
            this.slot = slot;
        }
    }

    private final String kind;
    private final String recordName;
    private final String[] fields;
    private final byte[] outputTypes;
    private final boolean ingestMs;

    /**
     * @param kind the schema's name (the .avsc stem), for messages
     * @param recordName the reader record's full name
     * @param fields output fields taken from the record, in row order
     * @param outputTypes T_LONG, T_DOUBLE or T_INT per field, as in the SQL row type
     * @param ingestMs whether the row ends with {@code ingest_ms} (the decode time, for latency)
     */
    AvroDecoder(String kind, String recordName, String[] fields, byte[] outputTypes, boolean ingestMs) {
        this.kind = kind;
        this.recordName = recordName;
        this.fields = fields;
        this.outputTypes = outputTypes;
        this.ingestMs = ingestMs;
    }

    /** The largest finite float32 and the smallest normal one (the scorer's dtype), as doubles. */
    static final double FLOAT32_MAX = Float.MAX_VALUE;
    static final double FLOAT32_MIN_NORMAL = Float.MIN_NORMAL;

    /**
     * The kind's rules beyond its Avro types: {reason, message}, or null for a good record. {@code maxAmount} is
     * fraud.max_amount (kinds without an amount ignore it).
     */
    abstract String[] check(Object[] values, long nowMs, long maxFutureMs, double maxAmount);

    private transient Map<Long, Plan> plans;
    private transient Map<Long, String> others;

    @Override
    public void open(FunctionContext context) throws Exception {
        load();
    }

    @Override
    public boolean isDeterministic() {
        return false; // reads the clock (ingest_ms, the future-timestamp rule)
    }

    void load() throws IOException {
        plans = new HashMap<>();
        others = new HashMap<>();
        InputStream in = AvroDecoder.class.getResourceAsStream("avro-writers.tsv");
        if (in == null) {
            throw new IOException("avro-writers.tsv is missing from the UDF jar (built by infra/services.py)");
        }
        String[] out = fields;
        try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null) {
                if (line.isEmpty() || line.startsWith("#")) {
                    continue;
                }
                String[] parts = line.split("\t");
                long fp = fingerprint(parts[0]);
                if (!parts[1].equals(recordName)) {
                    others.put(fp, parts[1]);
                    continue;
                }
                String[] writerFields = parts.length > 2 && !parts[2].isEmpty() ? parts[2].split(",") : new String[0];
                byte[] types = new byte[writerFields.length];
                int[] slot = new int[writerFields.length];
                boolean[] seen = new boolean[out.length];
                for (int i = 0; i < writerFields.length; i++) {
                    String[] nt = writerFields[i].split(":");
                    types[i] = typeCode(nt[1]);
                    slot[i] = -1;
                    for (int j = 0; j < out.length; j++) {
                        if (out[j].equals(nt[0])) {
                            slot[i] = j;
                            seen[j] = true;
                        }
                    }
                    if (slot[i] >= 0 && !promotable(types[i], outputTypes[slot[i]])) {
                        throw new IOException("writer " + parts[0] + " field " + nt[0] + " (" + nt[1]
                                + ") cannot be read as the output type");
                    }
                }
                for (int j = 0; j < out.length; j++) {
                    if (!seen[j]) {
                        throw new IOException("writer " + parts[0] + " of " + recordName + " lacks field " + out[j]);
                    }
                }
                plans.put(fp, new Plan(types, slot));
            }
        }
    }

    private static boolean promotable(byte from, byte to) {
        if (from == to) {
            return true;
        }
        if (to == T_LONG) {
            return from == T_INT;
        }
        if (to == T_DOUBLE) {
            return from == T_INT || from == T_LONG || from == T_FLOAT;
        }
        return false;
    }

    private static byte typeCode(String t) {
        switch (t) {
            case "null": return T_NULL;
            case "boolean": return T_BOOLEAN;
            case "int": return T_INT;
            case "long": return T_LONG;
            case "float": return T_FLOAT;
            case "double": return T_DOUBLE;
            case "bytes": return T_BYTES;
            case "string": return T_STRING;
            default: return T_OTHER;
        }
    }

    /** The 16 hex digits of the fingerprint's bytes as they appear on the wire, as a little-endian long. */
    static long fingerprint(String hex) {
        byte[] b = new byte[8];
        for (int i = 0; i < 8; i++) {
            b[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
        }
        return le64(b, 0);
    }

    /** The little-endian long at b[at..at+8), which the caller has checked is there. */
    private static long le64(byte[] b, int at) {
        return (b[at] & 0xFFL) | (b[at + 1] & 0xFFL) << 8 | (b[at + 2] & 0xFFL) << 16 | (b[at + 3] & 0xFFL) << 24
                | (b[at + 4] & 0xFFL) << 32 | (b[at + 5] & 0xFFL) << 40 | (b[at + 6] & 0xFFL) << 48
                | (b[at + 7] & 0xFFL) << 56;
    }

    /** The little-endian int at b[at..at+4), which the caller has checked is there. */
    private static int le32(byte[] b, int at) {
        return (b[at] & 0xFF) | (b[at + 1] & 0xFF) << 8 | (b[at + 2] & 0xFF) << 16 | (b[at + 3] & 0xFF) << 24;
    }

    /** Thrown inside {@link #decode} for a body that does not parse; never leaves it. */
    private static final class Corrupt extends Exception {
        private static final long serialVersionUID = 1L;

        Corrupt(String message) {
            super(message, null, false, false);
        }
    }

    /**
     * Decodes one record: {reason, error, field values...} with reason and error null for a good record, and zeros
     * standing in for the fields of a bad one. Never throws.
     */
    Object[] decode(byte[] raw, long nowMs, long maxFutureMs, double maxAmount) {
        String[] out = fields;
        Object[] values = new Object[out.length];
        String[] problem;
        try {
            problem = body(raw, values);
            if (problem == null) {
                problem = check(values, nowMs, maxFutureMs, maxAmount);
            }
        } catch (Throwable e) { // a bug of ours: never let one record fail (and restart) the job
            problem = internalError(e);
        }
        int extra = ingestMs ? 1 : 0;
        Object[] row = new Object[2 + out.length + extra];
        byte[] types = outputTypes;
        for (int j = 0; j < out.length; j++) {
            row[2 + j] = problem == null ? values[j] : zero(types[j]);
        }
        if (extra == 1) {
            row[2 + out.length] = problem == null ? nowMs : 0L;
        }
        if (problem != null) {
            row[0] = problem[0];
            row[1] = problem[1].length() > 2000 ? problem[1].substring(0, 2000) : problem[1];
        }
        return row;
    }

    private static String[] internalError(Throwable e) {
        return new String[] {"internal-error", "internal error decoding the record: " + e.getClass().getName() + ": "
                + e.getMessage()};
    }

    private static Object zero(byte type) {
        return type == T_DOUBLE ? (Object) 0.0 : type == T_INT ? (Object) 0 : (Object) 0L;
    }

    private String[] body(byte[] raw, Object[] values) {
        if (raw == null) {
            return new String[] {"null-value", "empty record (null value)"};
        }
        if (raw.length < HEADER_LEN || raw[0] != (byte) 0xC3 || raw[1] != (byte) 0x01) {
            return new String[] {"not-avro", "not an Avro single-object record (" + raw.length + " bytes)"};
        }
        long fp = le64(raw, 2);
        Plan plan = plans.get(fp);
        if (plan == null) {
            String other = others.get(fp);
            if (other != null) {
                return new String[] {"corrupt-avro", "corrupt Avro body for " + kind + ": a " + other
                        + " record cannot be read as " + recordName};
            }
            return new String[] {"unknown-schema", "unknown writer schema fingerprint " + hex(raw, 2, 8)};
        }
        int[] pos = {HEADER_LEN};
        try {
            byte[] outTypes = outputTypes;
            for (int i = 0; i < plan.types.length; i++) {
                Object v = read(raw, pos, plan.types[i]);
                int s = plan.slot[i];
                if (s >= 0) {
                    values[s] = convert(v, outTypes[s]);
                }
            }
        } catch (Corrupt e) {
            return new String[] {"corrupt-avro", "corrupt Avro body for " + kind + ": " + e.getMessage()};
        }
        if (pos[0] != raw.length) {
            return new String[] {"corrupt-avro", (raw.length - pos[0]) + " trailing bytes after a " + kind
                    + " record"};
        }
        return null;
    }

    private static Object convert(Object v, byte to) {
        if (to == T_DOUBLE) {
            return ((Number) v).doubleValue();
        }
        if (to == T_LONG) {
            return ((Number) v).longValue();
        }
        return v;
    }

    private static Object read(byte[] b, int[] pos, byte type) throws Corrupt {
        switch (type) {
            case T_NULL:
                return null;
            case T_BOOLEAN:
                need(b, pos[0], 1);
                return b[pos[0]++] != 0;
            case T_INT:
                // Avro ints are the same zigzag varint as longs; fastavro reads them alike, and so do we: the
                // kind's rules judge the value.
            case T_LONG:
                return varint(b, pos);
            case T_FLOAT: {
                need(b, pos[0], 4);
                float f = Float.intBitsToFloat(le32(b, pos[0]));
                pos[0] += 4;
                return (double) f;
            }
            case T_DOUBLE: {
                need(b, pos[0], 8);
                double d = Double.longBitsToDouble(le64(b, pos[0]));
                pos[0] += 8;
                return d;
            }
            case T_BYTES:
            case T_STRING: {
                long n = varint(b, pos);
                if (n < 0) {
                    throw new Corrupt("negative length " + n);
                }
                need(b, pos[0], n); // n <= the bytes left, so it fits an int
                int end = pos[0] + (int) n;
                if (type == T_STRING && !utf8(b, pos[0], end)) {
                    throw new Corrupt("invalid UTF-8 in a string");
                }
                pos[0] = end;
                return null; // no output field of ours is a string or bytes
            }
            default:
                throw new Corrupt("writer field of a type this decoder does not read");
        }
    }

    /**
     * Whether n more bytes follow position {@code at} (0 <= at <= b.length). Compares n with the bytes left: {@code
     * at + n} would overflow for an n near Long.MAX_VALUE (a crafted length) and pass.
     */
    private static void need(byte[] b, int at, long n) throws Corrupt {
        if (n < 0 || n > b.length - at) {
            throw new Corrupt("EOF: record ends inside a field (" + n + " bytes needed, " + (b.length - at)
                    + " left)");
        }
    }

    /**
     * Whether b[from..to) is well-formed UTF-8 as Python's strict decoder (and fastavro) reads it: no overlong forms,
     * no surrogates, nothing above U+10FFFF (the Unicode standard's table 3-7). Allocates nothing.
     */
    static boolean utf8(byte[] b, int from, int to) {
        int i = from;
        while (i < to) {
            int c = b[i] & 0xFF;
            if (c < 0x80) {
                i++;
                continue;
            }
            int n;
            int lo = 0x80, hi = 0xBF; // the allowed range of the second byte
            if (c >= 0xC2 && c <= 0xDF) {
                n = 1;
            } else if (c >= 0xE0 && c <= 0xEF) {
                n = 2;
                if (c == 0xE0) {
                    lo = 0xA0;
                } else if (c == 0xED) {
                    hi = 0x9F;
                }
            } else if (c >= 0xF0 && c <= 0xF4) {
                n = 3;
                if (c == 0xF0) {
                    lo = 0x90;
                } else if (c == 0xF4) {
                    hi = 0x8F;
                }
            } else {
                return false;
            }
            if (n > to - i - 1) {
                return false;
            }
            int c1 = b[i + 1] & 0xFF;
            if (c1 < lo || c1 > hi) {
                return false;
            }
            for (int k = 2; k <= n; k++) {
                if ((b[i + k] & 0xC0) != 0x80) {
                    return false;
                }
            }
            i += n + 1;
        }
        return true;
    }

    private static long varint(byte[] b, int[] pos) throws Corrupt {
        long v = 0;
        int shift = 0;
        int i = pos[0];
        while (true) {
            if (i >= b.length) {
                throw new Corrupt("EOF: record ends inside a varint");
            }
            byte x = b[i++];
            if (shift == 63 && (x & 0x7E) != 0 || shift > 63) {
                throw new Corrupt("varint longer than 64 bits");
            }
            v |= (long) (x & 0x7F) << shift;
            if ((x & 0x80) == 0) {
                break;
            }
            shift += 7;
        }
        pos[0] = i;
        return (v >>> 1) ^ -(v & 1);
    }

    private static String hex(byte[] b, int from, int n) {
        StringBuilder s = new StringBuilder();
        for (int i = from; i < from + n; i++) {
            s.append(String.format("%02x", b[i] & 0xFF));
        }
        return s.toString();
    }

    /** The SQL functions' body: never throws (a record that cannot be judged is an "internal-error" row). */
    Row toRow(byte[] raw, Long maxFutureMs, Double maxAmount) {
        return Row.of(decode(raw, System.currentTimeMillis(), maxFutureMs == null ? Long.MAX_VALUE / 2 : maxFutureMs,
                maxAmount == null || Double.isNaN(maxAmount) ? FLOAT32_MAX : maxAmount));
    }

    /**
     * For the tests (tests/unit/test_java_decoder.py): {@code java -cp ... io.streamscore.udfs.AvroDecoder KIND
     * NOW_MS MAX_FUTURE_MS [MAX_AMOUNT]} reads one record per line as hex ("-" for null) and prints reason, error,
     * then the fields, tab-separated (tabs and newlines in an error as spaces).
     */
    public static void main(String[] args) throws IOException {
        AvroDecoder d = "transaction".equals(args[0]) ? new DecodeTransaction()
                : "transaction_label".equals(args[0]) ? new DecodeLabel() : null;
        if (d == null) {
            throw new IllegalArgumentException("no Java decoder for " + args[0]);
        }
        d.load();
        long now = Long.parseLong(args[1]);
        long maxFuture = Long.parseLong(args[2]);
        double maxAmount = args.length > 3 ? Double.parseDouble(args[3]) : FLOAT32_MAX;
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        StringBuilder out = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null) {
            byte[] raw = null;
            if (!line.equals("-")) {
                raw = new byte[line.length() / 2];
                for (int i = 0; i < raw.length; i++) {
                    raw[i] = (byte) Integer.parseInt(line.substring(2 * i, 2 * i + 2), 16);
                }
            }
            Object[] row = d.decode(raw, now, maxFuture, maxAmount);
            out.append(row[0] == null ? "" : row[0]).append('\t')
                    .append(row[1] == null ? "" : ((String) row[1]).replace('\t', ' ').replace('\n', ' '));
            for (int i = 2; i < row.length; i++) {
                out.append('\t').append(row[i]);
            }
            out.append('\n');
        }
        System.out.print(out);
    }
}
