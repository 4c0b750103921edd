package io.streamscore.udfs;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.types.Row;

/**
 * Decodes and validates one kind of Avro single-object record (the Avro spec's {@code C3 01} marker, the writer
 * schema's 8-byte CRC-64-AVRO fingerprint, the binary body) into a row of {@code reason}, {@code error} and the
 * kind's fields: the JVM twin of udfs/routing.py's {@code BatchDecoder}, which stays the reference (the tests feed
 * both the same good, evolved and broken records and compare every verdict and field), and tested against Apache
 * Avro's own Java decoder as the oracle (tests/unit/test_avro_oracle.py: random evolved schemas and records).
 *
 * <p>The job's first Python hop used to be the decoder alone; in the JVM the records go straight from the Kafka
 * source to the SQL windows. The schemas come from {@code avro-writers.tsv}, which the jar build derives from
 * schemas/**.avsc (pipelines/serde.py {@code java_schema_index}): one line per writer with its fingerprint, full
 * name and whole schema, and one per reader (schemas/*.avsc). Every Avro type is read: records, enums, fixed,
 * arrays, maps, unions, the primitives, and the logical types decimal (a {@link BigDecimal}) and timestamp-millis (a
 * long). A writer of the kind's record name is resolved to the kind's reader once, when the function opens, by the
 * Avro specification's rules as Avro Java applies them ({@link #resolve}: fields matched by name, defaults for the
 * reader's fields the writer lacks, the writer's other fields skipped, int to long, float or double, long to float
 * or double, float to double, string to bytes and back, unions on either side by the first matching branch, enum
 * symbols by name or the reader's default); what cannot be resolved fails only the records that reach it, as in Avro
 * Java, with the verdict "schema-mismatch". A writer of another record cannot be read as this one: "corrupt-avro",
 * as fastavro says. Only the reader's fields the kind outputs are materialised; the others are still read and
 * checked (UTF-8, enum and union indexes), and the writer's fields the reader lacks are skipped as Avro does.
 *
 * <p>Nothing throws out of {@link #decode}: one bad record never fails the job. Every length, count and varint is
 * checked against the bytes left before it is used (a length is compared with the remainder, never added to a
 * position, so a crafted length near {@code Long.MAX_VALUE} cannot wrap around, and a count cannot make us allocate
 * more than the record's size), and any Throwable that still escapes the parser or the kind's rules (a bug of ours)
 * becomes the verdict "internal-error" with its message: the record goes to the dead-letter topic like any other bad
 * record. Stricter than Avro Java, on purpose: a boolean byte other than 0 or 1, a long varint with bits beyond 64 or
 * an int varint with bits beyond 32 (Avro drops them), and a string that is not UTF-8 (Avro substitutes U+FFFD) are
 * "corrupt-avro" (fastavro refuses invalid UTF-8 too).
 */
public abstract class AvroDecoder extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    static final int HEADER_LEN = 10;

    static final byte T_NULL = 0, T_BOOLEAN = 1, T_INT = 2, T_LONG = 3, T_FLOAT = 4, T_DOUBLE = 5, T_BYTES = 6,
            T_STRING = 7, T_RECORD = 8, T_ENUM = 9, T_FIXED = 10, T_ARRAY = 11, T_MAP = 12, T_UNION = 13;
    private static final String[] PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"};

    /** The verdicts of the parser: the bytes do not parse, or the writer's value has no place in the reader. */
    static final String CORRUPT = "corrupt-avro", MISMATCH = "schema-mismatch";

    /** Arrays of items that take no bytes (null, empty records) may claim at most this many items per record. */
    static final long MAX_EMPTY_ITEMS = 1 << 20;

    private final String kind;
    private final String recordName;
    private final String[] fields;
    private final byte[] outputTypes;
    private final boolean ingestMs;

    /**
     * @param kind the schema's name (the .avsc stem, the reader), for messages
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

    /** fraud.min_event_time_ms's default (2000-01-01): no record time may be older; pipelines/serde.py has it too. */
    static final long DEFAULT_MIN_TIME_MS = 946_684_800_000L;
    /** The oldest time a record may carry (fraud.min_event_time_ms, the SQL function's last argument). */
    long minTimeMs = DEFAULT_MIN_TIME_MS;

    /** Per writer fingerprint, the plan that reads its records as the reader. */
    private transient Map<Long, Record> plans;
    private transient Map<Long, String> others;
    /** The reader's field index of each output field, and which reader fields to materialise. */
    private transient int[] outIndex;
    private transient boolean[] keep;
    private transient int readerFields;

    @Override
    public void open(FunctionContext context) throws Exception {
        load();
    }

    @Override
    public boolean isDeterministic() {
        return false; // reads the clock (ingest_ms, the future-timestamp rule)
    }

    void load() throws IOException {
        InputStream in = AvroDecoder.class.getResourceAsStream("avro-writers.tsv");
        if (in == null) {
            throw new IOException("avro-writers.tsv is missing from the UDF jar (built by infra/services.py)");
        }
        Index index;
        try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            index = Index.read(r);
        }
        Type reader = index.readers.get(kind);
        if (reader == null || reader.kind != T_RECORD || !reader.name.equals(recordName)) {
            throw new IOException("avro-writers.tsv has no reader " + kind + " for " + recordName);
        }
        readerFields = reader.children.length;
        outIndex = new int[fields.length];
        keep = new boolean[readerFields];
        for (int j = 0; j < fields.length; j++) {
            int at = Arrays.asList(reader.names).indexOf(fields[j]);
            if (at < 0) {
                throw new IOException("reader " + kind + " lacks the output field " + fields[j]);
            }
            byte t = reader.children[at].kind;
            if (!(t == outputTypes[j] || t == T_INT && outputTypes[j] == T_LONG)) {
                throw new IOException("reader " + kind + " field " + fields[j] + " is not of the output type");
            }
            outIndex[j] = at;
            keep[at] = true;
        }
        Map<Long, Record> p = new HashMap<>();
        Map<Long, String> o = new HashMap<>();
        for (Map.Entry<Long, Type> w : index.writers.entrySet()) {
            Type t = w.getValue();
            if (t.kind == T_RECORD && t.name.equals(recordName)) {
                p.put(w.getKey(), (Record) resolve(t, reader, new IdentityHashMap<>()));
            } else {
                o.put(w.getKey(), t.name == null ? PRIMITIVES[t.kind] : t.name);
            }
        }
        plans = p;
        others = o;
    }

    // ----------------------------------------------------------------------------------------------- schemas

    /** A schema of the index, parsed from pipelines.serde.java_type's notation. */
    static final class Type {
        final byte kind;
        String name; // records, enums, fixed
        Type[] children = new Type[0]; // fields, branches, items, values
        String[] names; // field names, enum symbols
        byte[][] defaults; // per field, the Avro encoding of its default (null: none)
        String enumDefault;
        int size; // fixed
        int scale = -1; // decimal (bytes, fixed): the scale; -1: not a decimal
        boolean timestampMillis;

        Type(byte kind) {
            this.kind = kind;
        }

        static Type parse(String text) throws IOException {
            String[] tok = text.split(" ");
            int[] at = {0};
            Type t = parse(tok, at, new HashMap<>());
            if (at[0] != tok.length) {
                throw new IOException("trailing tokens in a schema: " + text);
            }
            return t;
        }

        private static Type parse(String[] tok, int[] at, Map<String, Type> named) throws IOException {
            String t = tok[at[0]++];
            Type out;
            switch (t) {
                case "record": {
                    out = new Type(T_RECORD);
                    out.name = tok[at[0]++];
                    named.put(out.name, out);
                    int n = Integer.parseInt(tok[at[0]++]);
                    out.children = new Type[n];
                    out.names = new String[n];
                    out.defaults = new byte[n][];
                    for (int i = 0; i < n; i++) {
                        out.names[i] = tok[at[0]++];
                        String d = tok[at[0]++];
                        out.defaults[i] = d.equals("-") ? null : d.equals("=") ? new byte[0] : unhex(d);
                        out.children[i] = parse(tok, at, named);
                    }
                    return out;
                }
                case "enum": {
                    out = new Type(T_ENUM);
                    out.name = tok[at[0]++];
                    named.put(out.name, out);
                    int n = Integer.parseInt(tok[at[0]++]);
                    out.names = Arrays.copyOfRange(tok, at[0], at[0] + n);
                    at[0] += n;
                    String d = tok[at[0]++];
                    out.enumDefault = d.equals("-") ? null : d;
                    return out;
                }
                case "fixed": {
                    out = new Type(T_FIXED);
                    out.name = tok[at[0]++];
                    named.put(out.name, out);
                    out.size = Integer.parseInt(tok[at[0]++]);
                    String logical = tok[at[0]++];
                    if (logical.startsWith("decimal:")) {
                        out.scale = Integer.parseInt(logical.split(":")[2]);
                    }
                    return out;
                }
                case "array":
                case "map":
                    out = new Type(t.equals("array") ? T_ARRAY : T_MAP);
                    out.children = new Type[] {parse(tok, at, named)};
                    return out;
                case "union": {
                    out = new Type(T_UNION);
                    int n = Integer.parseInt(tok[at[0]++]);
                    out.children = new Type[n];
                    for (int i = 0; i < n; i++) {
                        out.children[i] = parse(tok, at, named);
                    }
                    return out;
                }
                case "ref": {
                    Type ref = named.get(tok[at[0]++]);
                    if (ref == null) {
                        throw new IOException("reference to an undefined type " + tok[at[0] - 1]);
                    }
                    return ref;
                }
                default: {
                    String[] pl = t.split("@", 2);
                    int k = Arrays.asList(PRIMITIVES).indexOf(pl[0]);
                    if (k < 0) {
                        throw new IOException("unknown type " + t);
                    }
                    out = new Type((byte) k);
                    if (pl.length == 2) {
                        if (pl[1].startsWith("decimal:") && k == T_BYTES) {
                            out.scale = Integer.parseInt(pl[1].split(":")[2]);
                        } else if (pl[1].equals("timestamp-millis") && k == T_LONG) {
                            out.timestampMillis = true;
                        }
                    }
                    return out;
                }
            }
        }

        /** The fewest bytes a value of this type takes (0 for null, empty records and the like). */
        int minSize(int depth) {
            if (depth > 32) {
                return 0;
            }
            switch (kind) {
                case T_NULL: return 0;
                case T_FLOAT: return 4;
                case T_DOUBLE: return 8;
                case T_FIXED: return size;
                case T_RECORD: {
                    int n = 0;
                    for (Type c : children) {
                        n += c.minSize(depth + 1);
                    }
                    return n;
                }
                default: return 1;
            }
        }

        String describe() {
            return name != null ? name : kind == T_ARRAY ? "array" : kind == T_MAP ? "map"
                    : kind == T_UNION ? "union" : PRIMITIVES[kind];
        }
    }

    /** The writers (by fingerprint) and readers (by schema stem) of an index (avro-writers.tsv's lines). */
    static final class Index {
        final Map<Long, Type> writers = new HashMap<>();
        final Map<String, Type> readers = new HashMap<>();

        static Index read(BufferedReader r) throws IOException {
            Index index = new Index();
            String line;
            while ((line = r.readLine()) != null) {
                if (line.isEmpty() || line.startsWith("#")) {
                    continue;
                }
                String[] parts = line.split("\t");
                Type t = Type.parse(parts[2]);
                if (parts[0].startsWith("reader:")) {
                    index.readers.put(parts[0].substring(7), t);
                } else {
                    index.writers.put(fingerprint(parts[0]), t);
                }
            }
            return index;
        }
    }

    static byte[] unhex(String hex) {
        byte[] b = new byte[hex.length() / 2];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
        }
        return b;
    }

    /** The 16 hex digits of the fingerprint's bytes as they appear on the wire, as a little-endian long. */
    static long fingerprint(String hex) {
        return le64(unhex(hex), 0);
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

    // ------------------------------------------------------------------------------------------- resolution

    /** Thrown inside {@link #decode} for a body that does not parse or resolve; never leaves it. */
    static final class Corrupt extends Exception {
        private static final long serialVersionUID = 1L;
        final String reason;

        Corrupt(String message) {
            this(CORRUPT, message);
        }

        Corrupt(String reason, String message) {
            super(message, null, false, false);
            this.reason = reason;
        }
    }

    /** The bytes of one record and the read position. */
    static final class In {
        final byte[] b;
        int pos;

        In(byte[] b, int pos) {
            this.b = b;
            this.pos = pos;
        }

        int left() {
            return b.length - pos;
        }
    }

    /** An enum symbol, as the decoder returns it (a string would be ambiguous in a union with a string). */
    static final class Symbol {
        final String name;

        Symbol(String name) {
            this.name = name;
        }

        @Override
        public String toString() {
            return name;
        }
    }

    /** A fixed value, as the decoder returns it (bytes would be ambiguous in a union with bytes). */
    static final class Fixed {
        final byte[] bytes;

        Fixed(byte[] bytes) {
            this.bytes = bytes;
        }
    }

    /** Reads one writer value as the reader's: the value (null unless {@code keep}) or Corrupt. */
    abstract static class Node {
        abstract Object read(In in, boolean keep) throws Corrupt;
    }

    /** What Avro Java calls an error action: a writer value the reader has no place for; fails when reached. */
    static final class Mismatch extends Node {
        final String message;

        Mismatch(String message) {
            this.message = message;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            throw new Corrupt(MISMATCH, message);
        }
    }

    /**
     * The plan that reads a writer's values of type {@code w} as the reader's type {@code r} (the Avro spec's
     * schema resolution, as Avro Java's Resolver does it). {@code seen} closes recursive records.
     */
    static Node resolve(Type w, Type r, Map<Type, Map<Type, Record>> seen) {
        if (w.kind == T_UNION) {
            Node[] branches = new Node[w.children.length];
            for (int i = 0; i < branches.length; i++) {
                branches[i] = resolve(w.children[i], r, seen);
            }
            return new Union(branches);
        }
        if (r.kind == T_UNION) {
            int b = firstMatchingBranch(w, r);
            if (b < 0) {
                return new Mismatch("no branch of the reader's union matches the writer's " + w.describe());
            }
            return resolve(w, r.children[b], seen);
        }
        byte wk = w.kind, rk = r.kind;
        if (wk != rk) {
            boolean promote = wk == T_INT && (rk == T_LONG || rk == T_FLOAT || rk == T_DOUBLE)
                    || wk == T_LONG && (rk == T_FLOAT || rk == T_DOUBLE) || wk == T_FLOAT && rk == T_DOUBLE
                    || wk == T_STRING && rk == T_BYTES || wk == T_BYTES && rk == T_STRING;
            if (!promote) {
                return new Mismatch("found " + w.describe() + ", expecting " + r.describe());
            }
        }
        switch (rk) {
            case T_NULL: return NULL;
            case T_BOOLEAN: return BOOLEAN;
            case T_INT: return INT;
            case T_LONG: return wk == T_INT ? INT_AS_LONG : LONG;
            case T_FLOAT: return new Num(wk, T_FLOAT);
            case T_DOUBLE: return new Num(wk, T_DOUBLE);
            case T_STRING: return STRING;
            case T_BYTES: return new Bytes(r.scale);
            case T_FIXED:
                if (!w.name.equals(r.name) || w.size != r.size) {
                    return new Mismatch("found fixed " + w.name + "(" + w.size + "), expecting " + r.name + "("
                            + r.size + ")");
                }
                return new FixedNode(r.size, r.scale);
            case T_ENUM:
                return w.name.equals(r.name) ? new EnumNode(w, r) : new Mismatch("found " + w.name + ", expecting "
                        + r.name);
            case T_ARRAY:
                return new ArrayNode(resolve(w.children[0], r.children[0], seen), w.children[0].minSize(0));
            case T_MAP:
                return new MapNode(resolve(w.children[0], r.children[0], seen));
            default: { // T_RECORD
                if (!w.name.equals(r.name)) {
                    return new Mismatch("found " + w.name + ", expecting " + r.name);
                }
                Record done = seen.computeIfAbsent(w, k -> new IdentityHashMap<>()).get(r);
                if (done != null) {
                    return done;
                }
                Record rec = new Record(r.children.length);
                seen.get(w).put(r, rec);
                return rec.resolve(w, r, seen);
            }
        }
    }

    /** Avro Java's choice of a reader union's branch: the same type (a named one by name), else a promotion. */
    private static int firstMatchingBranch(Type w, Type r) {
        for (int j = 0; j < r.children.length; j++) {
            Type b = r.children[j];
            if (b.kind == w.kind && (b.name == null || b.name.equals(w.name))) {
                return j;
            }
        }
        for (int j = 0; j < r.children.length; j++) {
            byte bk = r.children[j].kind;
            switch (w.kind) {
                case T_INT:
                    if (bk == T_LONG || bk == T_DOUBLE || bk == T_FLOAT) {
                        return j;
                    }
                    break;
                case T_LONG:
                    if (bk == T_DOUBLE || bk == T_FLOAT) {
                        return j;
                    }
                    break;
                case T_FLOAT:
                    if (bk == T_DOUBLE) {
                        return j;
                    }
                    break;
                case T_STRING:
                    if (bk == T_BYTES) {
                        return j;
                    }
                    break;
                case T_BYTES:
                    if (bk == T_STRING) {
                        return j;
                    }
                    break;
                default:
            }
        }
        return -1;
    }

    private static final Node NULL = new Node() {
        @Override
        Object read(In in, boolean keep) {
            return null;
        }
    };

    private static final Node BOOLEAN = new Node() {
        @Override
        Object read(In in, boolean keep) throws Corrupt {
            need(in.b, in.pos, 1);
            byte x = in.b[in.pos++];
            if (x != 0 && x != 1) {
                throw new Corrupt("boolean byte " + (x & 0xFF) + " is neither 0 nor 1");
            }
            return x == 1;
        }
    };

    private static final Node INT = new Node() {
        @Override
        Object read(In in, boolean keep) throws Corrupt {
            return int32(in);
        }
    };

    private static final Node INT_AS_LONG = new Node() {
        @Override
        Object read(In in, boolean keep) throws Corrupt {
            return (long) int32(in);
        }
    };

    private static final Node LONG = new Node() {
        @Override
        Object read(In in, boolean keep) throws Corrupt {
            return int64(in);
        }
    };

    private static final Node STRING = new Node() {
        @Override
        Object read(In in, boolean keep) throws Corrupt {
            int n = length(in);
            int from = in.pos;
            if (!utf8(in.b, from, from + n)) {
                throw new Corrupt("invalid UTF-8 in a string");
            }
            in.pos += n;
            return keep ? new String(in.b, from, n, StandardCharsets.UTF_8) : null;
        }
    };

    /** float or double, from int, long, float or double. */
    static final class Num extends Node {
        final byte from, to;

        Num(byte from, byte to) {
            this.from = from;
            this.to = to;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            double d;
            float f;
            switch (from) {
                case T_INT: {
                    int v = int32(in);
                    return to == T_FLOAT ? (Object) (float) v : (Object) (double) v;
                }
                case T_LONG: {
                    long v = int64(in);
                    return to == T_FLOAT ? (Object) (float) v : (Object) (double) v;
                }
                case T_FLOAT:
                    need(in.b, in.pos, 4);
                    f = Float.intBitsToFloat(le32(in.b, in.pos));
                    in.pos += 4;
                    return to == T_FLOAT ? (Object) f : (Object) (double) f;
                default:
                    need(in.b, in.pos, 8);
                    d = Double.longBitsToDouble(le64(in.b, in.pos));
                    in.pos += 8;
                    return d;
            }
        }
    }

    /** bytes (from bytes or string), a decimal when {@code scale >= 0}. */
    static final class Bytes extends Node {
        final int scale;

        Bytes(int scale) {
            this.scale = scale;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            int n = length(in);
            int from = in.pos;
            in.pos += n;
            return keep || scale >= 0 ? bytesValue(in.b, from, n, scale) : null;
        }
    }

    private static Object bytesValue(byte[] b, int from, int n, int scale) throws Corrupt {
        byte[] v = Arrays.copyOfRange(b, from, from + n);
        if (scale < 0) {
            return v;
        }
        if (n == 0) {
            throw new Corrupt("a decimal of zero bytes");
        }
        return new BigDecimal(new BigInteger(v), scale);
    }

    static final class FixedNode extends Node {
        final int size, scale;

        FixedNode(int size, int scale) {
            this.size = size;
            this.scale = scale;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            need(in.b, in.pos, size);
            int from = in.pos;
            in.pos += size;
            if (scale >= 0) {
                return bytesValue(in.b, from, size, scale);
            }
            return keep ? new Fixed(Arrays.copyOfRange(in.b, from, from + size)) : null;
        }
    }

    static final class EnumNode extends Node {
        /** Per writer symbol index, the reader's symbol, or null with {@code missing} saying which. */
        final Symbol[] map;
        final String[] writerSymbols;

        EnumNode(Type w, Type r) {
            writerSymbols = w.names;
            map = new Symbol[w.names.length];
            List<String> rs = Arrays.asList(r.names);
            for (int i = 0; i < map.length; i++) {
                int j = rs.indexOf(w.names[i]);
                if (j < 0 && r.enumDefault != null) {
                    j = rs.indexOf(r.enumDefault);
                }
                map[i] = j < 0 ? null : new Symbol(r.names[j]);
            }
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            int i = index(in, map.length, "enum");
            if (map[i] == null) {
                throw new Corrupt(MISMATCH, "no match for the writer's enum symbol " + writerSymbols[i]);
            }
            return map[i];
        }
    }

    static final class Union extends Node {
        final Node[] branches;

        Union(Node[] branches) {
            this.branches = branches;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            return branches[index(in, branches.length, "union")].read(in, keep);
        }
    }

    /** A union's branch or an enum's symbol index, checked against the count. */
    private static int index(In in, int count, String what) throws Corrupt {
        int i = int32(in);
        if (i < 0 || i >= count) {
            throw new Corrupt(what + " index " + i + " out of range [0, " + count + ")");
        }
        return i;
    }

    /**
     * Checks a block of n items of at least minSize bytes each against the bytes left (items of no bytes: at most
     * MAX_EMPTY_ITEMS in all, counting the earlier blocks' {@code total}); returns the new total.
     */
    private static long items(In in, long n, long total, int minSize) throws Corrupt {
        total += n;
        if (minSize > 0 ? n > in.left() / minSize : total > MAX_EMPTY_ITEMS) {
            throw new Corrupt("EOF: a block of " + n + " items in " + in.left() + " bytes");
        }
        return total;
    }

    /** The item count of the next array or map block: 0 at the end; a negative count's byte size is dropped. */
    private static long blockCount(In in) throws Corrupt {
        long n = int64(in);
        if (n < 0) {
            if (n == Long.MIN_VALUE) {
                throw new Corrupt("block count " + n);
            }
            if (int64(in) < 0) { // the block's size in bytes, for skipping
                throw new Corrupt("a block's byte size is negative");
            }
            n = -n;
        }
        return n;
    }

    static final class ArrayNode extends Node {
        final Node item;
        final int itemMinSize;

        ArrayNode(Node item, int itemMinSize) {
            this.item = item;
            this.itemMinSize = itemMinSize;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            List<Object> out = keep ? new ArrayList<>() : null;
            long total = 0;
            for (long n = blockCount(in); n != 0; n = blockCount(in)) {
                total = items(in, n, total, itemMinSize);
                for (long i = 0; i < n; i++) {
                    Object v = item.read(in, keep);
                    if (keep) {
                        out.add(v);
                    }
                }
            }
            return out;
        }
    }

    static final class MapNode extends Node {
        final Node value;

        MapNode(Node value) {
            this.value = value;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            Map<String, Object> out = keep ? new HashMap<>() : null;
            for (long n = blockCount(in); n != 0; n = blockCount(in)) {
                items(in, n, 0, 1); // each entry has a key of at least one byte
                for (long i = 0; i < n; i++) {
                    String k = (String) STRING.read(in, true);
                    Object v = value.read(in, keep);
                    if (keep) {
                        out.put(k, v);
                    }
                }
            }
            return out;
        }
    }

    /** Skips a writer value the reader has no field for, as Avro Java does (structure, union and enum indexes). */
    static final class Skip extends Node {
        final Type w;

        Skip(Type w) {
            this.w = w;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            skip(w, in);
            return null;
        }

        private static void skip(Type t, In in) throws Corrupt {
            switch (t.kind) {
                case T_NULL:
                    return;
                case T_BOOLEAN:
                    need(in.b, in.pos, 1);
                    in.pos++;
                    return;
                case T_INT:
                    int32(in);
                    return;
                case T_ENUM: // Avro Java checks a skipped enum's index too (fastavro does not)
                    index(in, t.names.length, "enum");
                    return;
                case T_LONG:
                    int64(in);
                    return;
                case T_FLOAT:
                    need(in.b, in.pos, 4);
                    in.pos += 4;
                    return;
                case T_DOUBLE:
                    need(in.b, in.pos, 8);
                    in.pos += 8;
                    return;
                case T_BYTES:
                case T_STRING: {
                    int n = length(in); // not in.pos += length(in): that reads pos before the length's varint
                    in.pos += n;
                    return;
                }
                case T_FIXED:
                    need(in.b, in.pos, t.size);
                    in.pos += t.size;
                    return;
                case T_UNION:
                    skip(t.children[index(in, t.children.length, "union")], in);
                    return;
                case T_ARRAY:
                case T_MAP: {
                    Type item = t.children[0];
                    int min = t.kind == T_MAP ? 1 : item.minSize(0);
                    long total = 0;
                    while (true) {
                        long n = int64(in);
                        if (n == 0) {
                            return;
                        }
                        if (n < 0) { // a block with its size in bytes: skipped whole
                            long size = int64(in);
                            need(in.b, in.pos, size);
                            in.pos += (int) size;
                            continue;
                        }
                        total = items(in, n, total, min);
                        for (long i = 0; i < n; i++) {
                            if (t.kind == T_MAP) {
                                int k = length(in);
                                in.pos += k;
                            }
                            skip(item, in);
                        }
                    }
                }
                default: // T_RECORD
                    for (Type c : t.children) {
                        skip(c, in);
                    }
            }
        }
    }

    /** A record: the writer's fields in its order, each read into its reader field or skipped, then defaults. */
    static final class Record extends Node {
        final int fields;
        Node[] reads;
        int[] slot; // per writer field, the reader field (-1: skipped)
        int[] defaultSlot;
        Object[] defaultValue;
        Node error; // a reader field with neither a writer field nor a default: the whole record fails

        Record(int fields) {
            this.fields = fields;
        }

        Node resolve(Type w, Type r, Map<Type, Map<Type, Record>> seen) {
            List<String> rn = Arrays.asList(r.names);
            boolean[] given = new boolean[fields];
            reads = new Node[w.children.length];
            slot = new int[w.children.length];
            for (int i = 0; i < reads.length; i++) {
                int j = rn.indexOf(w.names[i]);
                slot[i] = j;
                if (j >= 0) {
                    given[j] = true;
                    reads[i] = AvroDecoder.resolve(w.children[i], r.children[j], seen);
                } else {
                    reads[i] = new Skip(w.children[i]);
                }
            }
            List<Integer> ds = new ArrayList<>();
            List<Object> dv = new ArrayList<>();
            for (int j = 0; j < fields; j++) {
                if (given[j]) {
                    continue;
                }
                if (r.defaults[j] == null) {
                    error = new Mismatch("the writer's " + w.name + " lacks the reader's field " + r.names[j]
                            + ", which has no default");
                    continue;
                }
                ds.add(j);
                try {
                    In d = new In(r.defaults[j], 0);
                    dv.add(AvroDecoder.resolve(r.children[j], r.children[j], seen).read(d, true));
                } catch (Corrupt e) {
                    error = new Mismatch("the default of " + r.names[j] + " does not decode: " + e.getMessage());
                }
            }
            defaultSlot = ds.stream().mapToInt(Integer::intValue).toArray();
            defaultValue = dv.toArray();
            return this;
        }

        @Override
        Object read(In in, boolean keep) throws Corrupt {
            Object[] values = keep ? new Object[fields] : null;
            readInto(in, values, null);
            return values;
        }

        /** Reads the record into {@code values} (null: validate only), materialising the fields in {@code keep}
         * (null: all of them). */
        void readInto(In in, Object[] values, boolean[] keep) throws Corrupt {
            if (error != null) {
                error.read(in, false);
            }
            Node[] rs = reads;
            int[] sl = slot;
            for (int i = 0; i < rs.length; i++) {
                int j = sl[i];
                boolean k = values != null && j >= 0 && (keep == null || keep[j]);
                Object v = rs[i].read(in, k);
                if (k) {
                    values[j] = v;
                }
            }
            if (values != null) {
                for (int i = 0; i < defaultSlot.length; i++) {
                    values[defaultSlot[i]] = defaultValue[i];
                }
            }
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
        Record plan = plans.get(fp);
        if (plan == null) {
            String other = others.get(fp);
            if (other != null) {
                return new String[] {CORRUPT, "corrupt Avro body for " + kind + ": a " + other
                        + " record cannot be read as " + recordName};
            }
            return new String[] {"unknown-schema", "unknown writer schema fingerprint " + hex(raw, 2, 8)};
        }
        In in = new In(raw, HEADER_LEN);
        Object[] all = new Object[readerFields];
        try {
            plan.readInto(in, all, keep);
        } catch (Corrupt e) {
            return new String[] {e.reason, (e.reason.equals(CORRUPT) ? "corrupt Avro body for " : "schema mismatch for ")
                    + kind + ": " + e.getMessage()};
        }
        if (in.pos != raw.length) {
            return new String[] {CORRUPT, (raw.length - in.pos) + " trailing bytes after a " + kind + " record"};
        }
        byte[] outTypes = outputTypes;
        for (int j = 0; j < values.length; j++) {
            Object v = all[outIndex[j]];
            values[j] = outTypes[j] == T_LONG && v instanceof Integer ? (Object) (long) (Integer) v : v;
        }
        return null;
    }

    /** The length of a string or bytes value, checked against the bytes left. */
    private static int length(In in) throws Corrupt {
        long n = int64(in);
        if (n < 0) {
            throw new Corrupt("negative length " + n);
        }
        need(in.b, in.pos, n); // n <= the bytes left, so it fits an int
        return (int) n;
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

    /** A long: a zigzag varint of at most 64 bits. */
    static long int64(In in) throws Corrupt {
        byte[] b = in.b;
        long v = 0;
        int shift = 0;
        int i = in.pos;
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
        in.pos = i;
        return (v >>> 1) ^ -(v & 1);
    }

    /** An int: a zigzag varint of at most 32 bits (5 bytes; Avro Java refuses a sixth and drops bits beyond 32). */
    static int int32(In in) throws Corrupt {
        byte[] b = in.b;
        int v = 0;
        int shift = 0;
        int i = in.pos;
        while (true) {
            if (i >= b.length) {
                throw new Corrupt("EOF: record ends inside a varint");
            }
            byte x = b[i++];
            if (shift == 28 && (x & 0xF0) != 0) {
                throw new Corrupt("int varint longer than 32 bits");
            }
            v |= (x & 0x7F) << shift;
            if ((x & 0x80) == 0) {
                break;
            }
            shift += 7;
        }
        in.pos = i;
        return (v >>> 1) ^ -(v & 1);
    }

    static String hex(byte[] b, int from, int n) {
        StringBuilder s = new StringBuilder();
        for (int i = from; i < from + n; i++) {
            s.append(String.format("%02x", b[i] & 0xFF));
        }
        return s.toString();
    }

    /** The SQL functions' body: never throws (a record that cannot be judged is an "internal-error" row). */
    Row toRow(byte[] raw, Long maxFutureMs, Double maxAmount, Long minTimeMs) {
        this.minTimeMs = minTimeMs == null ? DEFAULT_MIN_TIME_MS : minTimeMs;
        return Row.of(decode(raw, System.currentTimeMillis(), maxFutureMs == null ? Long.MAX_VALUE / 2 : maxFutureMs,
                maxAmount == null || Double.isNaN(maxAmount) ? FLOAT32_MAX : maxAmount));
    }

    /**
     * For the tests (tests/unit/test_java_decoder.py): {@code java -cp ... io.streamscore.udfs.AvroDecoder KIND
     * NOW_MS MAX_FUTURE_MS [MAX_AMOUNT [MIN_TIME_MS]]} reads one record per line as hex ("-" for null) and prints reason, error,
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
        d.minTimeMs = args.length > 4 ? Long.parseLong(args[4]) : DEFAULT_MIN_TIME_MS;
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        StringBuilder out = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null) {
            byte[] raw = line.equals("-") ? null : unhex(line);
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
