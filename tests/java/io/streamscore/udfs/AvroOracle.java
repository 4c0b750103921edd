package io.streamscore.udfs;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.StringReader;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.avro.AvroTypeException;
import org.apache.avro.Conversions;
import org.apache.avro.Schema;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericEnumSymbol;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.IndexedRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.Decoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.util.Utf8;

/**
 * Test only (tests/unit/test_avro_oracle.py): decodes each record with our {@link AvroDecoder}'s resolving parser
 * and with Apache Avro's own Java decoder ({@link GenericDatumReader} of the writer and reader schemas, the
 * reference implementation), and prints both verdicts and values in one rendering, for the test to compare.
 *
 * <p>{@code java AvroOracle INDEX AVRO_SCHEMAS} reads stdin lines {@code READER<TAB>HEX}: READER names a reader
 * line of both files, the record's header names its writer by fingerprint. INDEX is in pipelines.serde.java_type's
 * notation, AVRO_SCHEMAS has the same keys with the schemas' JSON. Output per record: our verdict, our value, Avro's
 * verdict, Avro's value, Avro's message; a reader named {@code kind:transaction} also runs the SQL function
 * ({@link DecodeTransaction}, the jar's own index) and prints its row and Avro's values of the output fields.
 *
 * <p>One rule of ours is applied to Avro's result explicitly: strings must be valid UTF-8 (Avro Java substitutes
 * U+FFFD; fastavro and we refuse), verdict "corrupt-avro" with a message starting "utf8:".
 */
public final class AvroOracle {
    private AvroOracle() {
    }

    /** GenericDatumReader with strict UTF-8 strings (our rule, applied to the oracle explicitly). */
    static final class StrictReader extends GenericDatumReader<Object> {
        StrictReader(Schema w, Schema r, GenericData model) {
            super(w, r, model);
        }

        @Override
        protected Object readString(Object old, Schema expected, Decoder in) throws IOException {
            return readString(old, in); // whatever string class the model would pick (1.12 picks String)
        }

        @Override
        protected Object readString(Object old, Decoder in) throws IOException {
            Utf8 s = in.readString(null);
            try {
                StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(s.getBytes(), 0, s.getByteLength()));
            } catch (CharacterCodingException e) {
                throw new IOException("utf8: invalid UTF-8 in a string");
            }
            return s.toString();
        }
    }

    static Map<String, String> lines(String path) throws IOException {
        Map<String, String> out = new HashMap<>();
        for (String line : Files.readAllLines(Paths.get(path), StandardCharsets.UTF_8)) {
            if (!line.isEmpty() && !line.startsWith("#")) {
                String[] p = line.split("\t", 3);
                out.put(p[0], p[p.length - 1]);
            }
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        // Avro Java allocates a string's, bytes' or collection's claimed size before reading it: bound them, or a
        // crafted length makes the oracle itself run out of memory (its limits' defaults are ~2^31).
        System.setProperty("org.apache.avro.limits.string.maxLength", "1000000");
        System.setProperty("org.apache.avro.limits.bytes.maxLength", "1000000");
        System.setProperty("org.apache.avro.limits.collectionItems.maxLength", String.valueOf(AvroDecoder.MAX_EMPTY_ITEMS));
        String indexText = new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8);
        AvroDecoder.Index index = AvroDecoder.Index.read(new BufferedReader(new StringReader(indexText)));
        Map<String, String> json = lines(args[1]);
        GenericData model = new GenericData();
        model.addLogicalTypeConversion(new Conversions.DecimalConversion());
        model.addLogicalTypeConversion(new TimeConversions.TimestampMillisConversion());
        // The resolving decoder (GenericDatumReader's own methods), not the FastReaderBuilder that 1.12 uses by
        // default: only that path calls the strict readString above.
        model.setFastReaderEnabled(false);
        Map<String, AvroDecoder.Node> ours = new HashMap<>();
        Map<String, StrictReader> theirs = new HashMap<>();
        DecodeTransaction tx = null;
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        StringBuilder out = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null) {
            String[] p = line.split("\t");
            String readerName = p[0];
            boolean kind = readerName.startsWith("kind:");
            String reader = kind ? readerName.substring(5) : readerName;
            byte[] raw = AvroDecoder.unhex(p[1]);
            String fpHex = AvroDecoder.hex(raw, 2, 8);
            String key = fpHex + "/" + reader;
            String[] mine;
            try {
                AvroDecoder.Node plan = ours.get(key);
                if (plan == null) {
                    plan = AvroDecoder.resolve(index.writers.get(AvroDecoder.fingerprint(fpHex)),
                            index.readers.get(reader), new java.util.IdentityHashMap<>());
                    ours.put(key, plan);
                }
                AvroDecoder.In body = new AvroDecoder.In(raw, AvroDecoder.HEADER_LEN);
                Object v = plan.read(body, true);
                mine = body.pos == raw.length ? new String[] {"", render(v)}
                        : new String[] {AvroDecoder.CORRUPT, "trailing bytes"};
            } catch (AvroDecoder.Corrupt e) {
                mine = new String[] {e.reason, e.getMessage()};
            } catch (Throwable e) {
                mine = new String[] {"internal-error", e.toString()};
            }
            String[] avro;
            Object value = null;
            try {
                StrictReader r = theirs.get(key);
                if (r == null) {
                    Schema ws = new Schema.Parser().parse(json.get(fpHex));
                    Schema rs = new Schema.Parser().parse(json.get("reader:" + reader));
                    r = new StrictReader(ws, rs, model);
                    theirs.put(key, r);
                }
                BinaryDecoder d = DecoderFactory.get().binaryDecoder(raw, AvroDecoder.HEADER_LEN,
                        raw.length - AvroDecoder.HEADER_LEN, null);
                value = r.read(null, d);
                avro = d.isEnd() ? new String[] {"", render(ours(value)), ""}
                        : new String[] {AvroDecoder.CORRUPT, "", "trailing bytes"};
            } catch (AvroTypeException e) {
                // Avro Java raises AvroTypeException for resolution errors (schema-mismatch) and for two data
                // errors, an enum or union index out of range (corrupt-avro); each field it passes prefixes its name
                String m = String.valueOf(e.getMessage()).replaceAll("^(Field \"[^\"]*\" content mismatch: )+", "");
                boolean data = m.startsWith("Enumeration out of range") || m.startsWith("Union branch index out of");
                avro = new String[] {data ? AvroDecoder.CORRUPT : AvroDecoder.MISMATCH, "",
                    e.getClass().getName() + ": " + m};
            } catch (Throwable e) {
                avro = new String[] {AvroDecoder.CORRUPT, "", e.getClass().getName() + ": " + e.getMessage()};
                if (String.valueOf(e.getMessage()).matches("(Collection|Map) claims .* bytes each.*")) {
                    // Avro 1.12 bounds a block's count by the reader's item size (8 for a double promoted from a
                    // 4-byte float): when the writer's own schema reads the bytes, the refusal is that sizing
                    try {
                        Schema ws = new Schema.Parser().parse(json.get(fpHex));
                        BinaryDecoder d = DecoderFactory.get().binaryDecoder(raw, AvroDecoder.HEADER_LEN,
                                raw.length - AvroDecoder.HEADER_LEN, null);
                        new StrictReader(ws, ws, model).read(null, d);
                        if (d.isEnd()) {
                            avro[0] = "avro-sizing";
                        }
                    } catch (Throwable again) {
                        // a refusal of the bytes themselves
                    }
                }
            }
            out.append(mine[0]).append('\t').append(clean(mine[1])).append('\t').append(avro[0]).append('\t')
                    .append(avro[1]).append('\t').append(clean(avro[2]));
            if (kind) {
                if (tx == null) {
                    tx = new DecodeTransaction();
                    tx.load();
                }
                Object[] row = tx.decode(raw, Long.parseLong(p[2]), Long.parseLong(p[3]), Double.parseDouble(p[4]));
                out.append('\t').append(row[0] == null ? "" : row[0]);
                for (int i = 2; i < row.length - 1; i++) {
                    out.append('\t').append(row[i] instanceof Double ? Double.toHexString((Double) row[i]) : row[i]);
                }
                if (avro[0].isEmpty()) {
                    IndexedRecord rec = (IndexedRecord) value;
                    for (String f : new String[] {"transaction_id", "customer_id", "terminal_id", "amount",
                        "event_time", "produced_at"}) {
                        Object v = rec.get(rec.getSchema().getField(f).pos());
                        out.append('\t').append(v instanceof Double ? Double.toHexString((Double) v)
                                : v instanceof Instant ? ((Instant) v).toEpochMilli() : v);
                    }
                }
            }
            out.append('\n');
        }
        System.out.print(out);
    }

    private static String clean(String s) {
        return s == null ? "" : s.replace('\t', ' ').replace('\n', ' ');
    }

    /** Avro Java's generic values as our decoder's (the same classes, so one rendering judges both). */
    static Object ours(Object v) {
        if (v instanceof Utf8) {
            return v.toString();
        }
        if (v instanceof ByteBuffer) {
            ByteBuffer b = ((ByteBuffer) v).duplicate();
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        }
        if (v instanceof GenericFixed) {
            return new AvroDecoder.Fixed(((GenericFixed) v).bytes());
        }
        if (v instanceof GenericEnumSymbol) {
            return new AvroDecoder.Symbol(v.toString());
        }
        if (v instanceof IndexedRecord) {
            IndexedRecord r = (IndexedRecord) v;
            Object[] out = new Object[r.getSchema().getFields().size()];
            for (int i = 0; i < out.length; i++) {
                out[i] = ours(r.get(i));
            }
            return out;
        }
        if (v instanceof Collection) {
            List<Object> out = new ArrayList<>();
            for (Object o : (Collection<?>) v) {
                out.add(ours(o));
            }
            return out;
        }
        if (v instanceof Map) {
            Map<String, Object> out = new HashMap<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                out.put(e.getKey().toString(), ours(e.getValue()));
            }
            return out;
        }
        if (v instanceof Instant) {
            return ((Instant) v).toEpochMilli();
        }
        return v;
    }

    /** One text per value, with its type: i5, l5, f/d as bits (NaN as NaN), s"...", b/x hex, e symbols, n decimals. */
    static String render(Object v) {
        StringBuilder s = new StringBuilder();
        render(v, s);
        return s.toString();
    }

    private static void render(Object v, StringBuilder s) {
        if (v == null) {
            s.append("null");
        } else if (v instanceof Boolean) {
            s.append(v);
        } else if (v instanceof Integer) {
            s.append('i').append(v);
        } else if (v instanceof Long) {
            s.append('l').append(v);
        } else if (v instanceof Float) {
            float f = (Float) v;
            s.append('f').append(Float.isNaN(f) ? "NaN" : Integer.toHexString(Float.floatToRawIntBits(f)));
        } else if (v instanceof Double) {
            double d = (Double) v;
            s.append('d').append(Double.isNaN(d) ? "NaN" : Long.toHexString(Double.doubleToRawLongBits(d)));
        } else if (v instanceof String) {
            s.append('s');
            for (char c : ((String) v).toCharArray()) {
                s.append(c >= 0x20 && c < 0x7f && c != '\\' ? String.valueOf(c) : String.format("\\u%04x", (int) c));
            }
        } else if (v instanceof byte[]) {
            s.append('b').append(AvroDecoder.hex((byte[]) v, 0, ((byte[]) v).length));
        } else if (v instanceof AvroDecoder.Fixed) {
            byte[] b = ((AvroDecoder.Fixed) v).bytes;
            s.append('x').append(AvroDecoder.hex(b, 0, b.length));
        } else if (v instanceof AvroDecoder.Symbol) {
            s.append('e').append(v);
        } else if (v instanceof BigDecimal) {
            BigDecimal d = (BigDecimal) v;
            s.append('n').append(d.unscaledValue()).append('E').append(d.scale());
        } else if (v instanceof Object[]) {
            s.append('{');
            for (Object o : (Object[]) v) {
                render(o, s);
                s.append(',');
            }
            s.append('}');
        } else if (v instanceof List) {
            s.append('[');
            for (Object o : (List<?>) v) {
                render(o, s);
                s.append(',');
            }
            s.append(']');
        } else if (v instanceof Map) {
            s.append('<');
            for (Map.Entry<?, ?> e : new TreeMap<>((Map<?, ?>) v).entrySet()) {
                render(e.getKey(), s);
                s.append(':');
                render(e.getValue(), s);
                s.append(',');
            }
            s.append('>');
        } else {
            s.append("?").append(v.getClass().getName());
        }
    }
}
