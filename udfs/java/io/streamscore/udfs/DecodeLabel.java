package io.streamscore.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.types.Row;

/** {@code decode_transaction_label(value, max_future_ms, min_time_ms)}: see {@link AvroDecoder}; the rules are udfs/routing.py's. */
public class DecodeLabel extends AvroDecoder {
    private static final long serialVersionUID = 1L;
    private static final String[] FIELDS = {"transaction_id", "customer_id", "terminal_id", "label", "tx_time",
        "label_time"};
    private static final byte[] TYPES = {T_LONG, T_LONG, T_LONG, T_INT, T_LONG, T_LONG};

    public DecodeLabel() {
        super("transaction_label", "io.streamscore.TransactionLabel", FIELDS, TYPES, false);
    }

    @DataTypeHint("ROW<reason STRING, error STRING, transaction_id BIGINT, customer_id BIGINT, terminal_id BIGINT, "
            + "label INT, tx_time BIGINT, label_time BIGINT>")
    public Row eval(byte[] value, Long maxFutureMs, Long minTimeMs) {
        return toRow(value, maxFutureMs, null, minTimeMs);
    }

    @Override
    String[] check(Object[] v, long nowMs, long maxFutureMs, double maxAmount) {
        int label = (Integer) v[3]; // an Avro int: the decoder refuses varints beyond 32 bits
        long labelTime = (Long) v[5];
        if (label != 0 && label != 1) {
            return new String[] {"bad-label", "label " + label + " is not 0 or 1"};
        }
        if (labelTime <= 0 || labelTime < minTimeMs || labelTime > nowMs + maxFutureMs) {
            return new String[] {"bad-timestamp", "label_time " + labelTime + " is out of range"};
        }
        return null;
    }
}
