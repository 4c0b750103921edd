package io.streamscore.udfs;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.types.Row;

/**
 * {@code decode_transaction(value, max_future_ms, max_amount, min_time_ms)}: see {@link AvroDecoder}; the rules are
 * serde.check_transaction. {@code max_amount} is fraud.max_amount (null: only the scorer's float32 range limits
 * the amount).
 */
public class DecodeTransaction extends AvroDecoder {
    private static final long serialVersionUID = 1L;
    private static final String[] FIELDS = {"transaction_id", "customer_id", "terminal_id", "amount", "event_time",
        "produced_at"};
    private static final byte[] TYPES = {T_LONG, T_LONG, T_LONG, T_DOUBLE, T_LONG, T_LONG};

    public DecodeTransaction() {
        super("transaction", "io.streamscore.Transaction", FIELDS, TYPES, true);
    }

    @DataTypeHint("ROW<reason STRING, error STRING, transaction_id BIGINT, customer_id BIGINT, terminal_id BIGINT, "
            + "amount DOUBLE, event_time BIGINT, produced_at BIGINT, ingest_ms BIGINT>")
    public Row eval(byte[] value, Long maxFutureMs, Double maxAmount, Long minTimeMs) {
        return toRow(value, maxFutureMs, maxAmount, minTimeMs);
    }

    @Override
    String[] check(Object[] v, long nowMs, long maxFutureMs, double maxAmount) {
        double amount = (Double) v[3];
        long eventTime = (Long) v[4];
        if (Double.isNaN(amount) || Double.isInfinite(amount)) {
            return new String[] {"bad-amount", "amount is " + amount};
        }
        if (amount < 0) {
            return new String[] {"negative-amount", "amount " + amount + " is negative"};
        }
        // The scorer computes in float32 and raises on non-finite input: a double beyond float32's range would
        // become infinite there, and a subnormal one is not a value any card transaction has.
        if (amount > FLOAT32_MAX || amount != 0 && amount < FLOAT32_MIN_NORMAL) {
            return new String[] {"bad-amount", "amount " + amount + " is not a normal float32 value (the scorer's "
                    + "dtype)"};
        }
        if (amount > maxAmount) {
            return new String[] {"amount-too-large", "amount " + amount + " is over fraud.max_amount " + maxAmount};
        }
        if (eventTime <= 0) {
            return new String[] {"bad-timestamp", "event_time " + eventTime + " is not a positive epoch-millis value"};
        }
        if (eventTime < minTimeMs) {
            return new String[] {"bad-timestamp", "event_time " + eventTime + " is before fraud.min_event_time_ms "
                    + minTimeMs};
        }
        if (eventTime > nowMs + maxFutureMs) {
            return new String[] {"future-timestamp", "event_time " + eventTime + " is more than " + maxFutureMs
                    + " ms ahead of the reference time " + nowMs};
        }
        if ((Long) v[1] < 0 || (Long) v[2] < 0) {
            return new String[] {"bad-id", "customer_id and terminal_id must be >= 0"};
        }
        return null;
    }
}
