package io.streamscore.udfs;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.IndexedRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

/**
 * Benchmark (tests/bench_decoder.py): decode throughput of the SQL function's body, our {@link DecodeTransaction},
 * against Apache Avro Java behind the same function (the writer's {@link GenericDatumReader} by fingerprint, reused
 * decoder and record, then the same fields and rules), on the same records, one thread, alternating rounds.
 *
 * <p>{@code java AvroDecodeBench SCHEMAS RECORDS ROUNDS SECONDS}: SCHEMAS as AvroOracle's (writers by fingerprint,
 * {@code reader:transaction}), RECORDS one hex record per line. Prints one line per round: decoder, records/s.
 */
public final class AvroDecodeBench {
    private AvroDecodeBench() {
    }

    /** Avro Java behind the SQL function: what DecodeTransaction would do with the library instead of its parser. */
    static final class AvroJava {
        final Map<Long, GenericDatumReader<IndexedRecord>> readers = new HashMap<>();
        final Map<Long, IndexedRecord> reuse = new HashMap<>();
        final int[] pos;
        final DecodeTransaction rules = new DecodeTransaction();
        BinaryDecoder decoder;

        AvroJava(Map<String, String> json) {
            this(json, false);
        }

        /** {@code strict}: with the strict UTF-8 strings our decoder and fastavro keep (AvroOracle.StrictReader,
         * which needs Avro's resolving decoder: its FastReaderBuilder does not call the overridden method). */
        AvroJava(Map<String, String> json, boolean strict) {
            Schema reader = new Schema.Parser().parse(json.get("reader:transaction"));
            for (Map.Entry<String, String> e : json.entrySet()) {
                if (!e.getKey().startsWith("reader:")) {
                    Schema w = new Schema.Parser().parse(e.getValue());
                    GenericData model = new GenericData();
                    model.setFastReaderEnabled(!strict);
                    @SuppressWarnings({"unchecked", "rawtypes"})
                    GenericDatumReader<IndexedRecord> r = strict ? (GenericDatumReader) new AvroOracle.StrictReader(
                            w, reader, model) : new GenericDatumReader<>(w, reader, model);
                    readers.put(AvroDecoder.fingerprint(e.getKey()), r);
                }
            }
            String[] f = {"transaction_id", "customer_id", "terminal_id", "amount", "event_time", "produced_at"};
            pos = new int[f.length];
            for (int i = 0; i < f.length; i++) {
                pos[i] = reader.getField(f[i]).pos();
            }
        }

        Object[] decode(byte[] raw, long now) {
            Object[] values = new Object[pos.length];
            try {
                if (raw.length < 10 || raw[0] != (byte) 0xC3 || raw[1] != 1) {
                    return new Object[] {"not-avro"};
                }
                long fp = 0;
                for (int i = 0; i < 8; i++) {
                    fp |= (raw[2 + i] & 0xFFL) << (8 * i);
                }
                GenericDatumReader<IndexedRecord> r = readers.get(fp);
                if (r == null) {
                    return new Object[] {"unknown-schema"};
                }
                decoder = DecoderFactory.get().binaryDecoder(raw, 10, raw.length - 10, decoder);
                IndexedRecord rec = r.read(reuse.get(fp), decoder);
                reuse.put(fp, rec);
                if (!decoder.isEnd()) {
                    return new Object[] {"corrupt-avro"};
                }
                for (int i = 0; i < pos.length; i++) {
                    values[i] = rec.get(pos[i]);
                }
                String[] problem = rules.check(values, now, 86_400_000L, 1e6);
                return problem == null ? values : new Object[] {problem[0]};
            } catch (Throwable e) {
                return new Object[] {"corrupt-avro"};
            }
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> json = AvroOracle.lines(args[0]);
        List<byte[]> list = new ArrayList<>();
        for (String line : Files.readAllLines(Paths.get(args[1]), StandardCharsets.UTF_8)) {
            list.add(AvroDecoder.unhex(line));
        }
        byte[][] records = list.toArray(new byte[0][]);
        int rounds = Integer.parseInt(args[2]);
        double seconds = Double.parseDouble(args[3]);
        DecodeTransaction ours = new DecodeTransaction();
        ours.load();
        AvroJava avro = new AvroJava(json);
        AvroJava strict = new AvroJava(json, true);
        AvroJava[] avros = {null, avro, strict};
        String[] names = {"ours", "avro-java", "avro-java-strict-utf8"};
        long now = System.currentTimeMillis();
        // the same verdicts first: a benchmark of two decoders that disagree measures nothing
        for (byte[] raw : records) {
            Object[] a = ours.decode(raw, now, 86_400_000L, 1e6);
            Object[] b = avro.decode(raw, now);
            if (a[0] != null || b.length == 1) {
                throw new IllegalStateException("a benchmark record is not good: " + a[0] + " / " + b[0]);
            }
            for (int i = 0; i < 6; i++) {
                if (!a[2 + i].equals(b[i])) {
                    throw new IllegalStateException("field " + i + " differs: " + a[2 + i] + " / " + b[i]);
                }
            }
        }
        long sink = 0;
        for (int round = -1; round < rounds; round++) { // round -1: warm-up of both
            for (int which = 0; which < 3; which++) {
                AvroJava lib = avros[which];
                long n = 0;
                long start = System.nanoTime();
                long end = start + (long) (seconds * 1e9);
                long t;
                do {
                    for (byte[] raw : records) {
                        Object[] row = which == 0 ? ours.decode(raw, now, 86_400_000L, 1e6) : lib.decode(raw, now);
                        sink += row.length;
                    }
                    n += records.length;
                    t = System.nanoTime();
                } while (t < end);
                if (round >= 0) {
                    System.out.println(names[which] + "\t" + (long) (n / ((t - start) / 1e9)));
                }
            }
        }
        System.err.println("sink " + sink);
    }
}
