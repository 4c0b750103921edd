package io.streamscore.udfs;

import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.api.dataview.MapView;
import org.apache.flink.types.Row;

/**
 * Per-customer rolling features (see {@link CustomerWindows}) as a process table function partitioned by customer,
 * over the transaction rows {@link TerminalFeatures} emits: the same event-time RANGE semantics, with the rows
 * waiting for the watermark in {@link PendingRows} and the window's timestamps and amounts in {@link WindowRows}.
 * Each row goes out with its own columns, its terminal features and its customer features: on arrival (this class)
 * or at the watermark ({@link CustomerFeaturesAtWatermark}), with {@code dropped = 0}; a row over the key's bound of
 * rows ahead of the watermark goes out at once with null customer features and {@code dropped = 1} (see
 * {@link RollingFeatures}).
 */
@FunctionHint(output = @DataTypeHint(
        "ROW<transaction_id BIGINT, terminal_id BIGINT, amount DOUBLE, event_time BIGINT, produced_at BIGINT, "
                + "ingest_ms BIGINT, term_cnt_1d BIGINT, term_nlabels_1d BIGINT, term_nfraud_1d BIGINT, "
                + "term_cnt_7d BIGINT, term_nlabels_7d BIGINT, term_nfraud_7d BIGINT, term_cnt_30d BIGINT, "
                + "term_nlabels_30d BIGINT, term_nfraud_30d BIGINT, cust_cnt_5m BIGINT, cust_sum_5m DOUBLE, "
                + "cust_cnt_1h BIGINT, cust_sum_1h DOUBLE, cust_cnt_1d BIGINT, cust_sum_1d DOUBLE, "
                + "cust_cnt_7d BIGINT, cust_sum_7d DOUBLE, cust_cnt_30d BIGINT, cust_sum_30d DOUBLE, "
                + "cust_same_ts BIGINT, cust_prev_ts BIGINT, dropped INT>"))
public class CustomerFeatures extends RollingFeatures {
    private static final long serialVersionUID = 1L;
    /** The input's long columns kept while a row waits, in output order (the terminal features included). */
    static final String[] LONG_COLUMNS = {"transaction_id", "terminal_id", "event_time", "produced_at", "ingest_ms",
        "term_cnt_1d", "term_nlabels_1d", "term_nfraud_1d", "term_cnt_7d", "term_nlabels_7d", "term_nfraud_7d",
        "term_cnt_30d", "term_nlabels_30d", "term_nfraud_30d"};
    private static final int NL = LONG_COLUMNS.length;
    private static final int ND = 1;  // amount

    /** On arrival (see {@link RollingFeatures}); {@link CustomerFeaturesAtWatermark} is the other mode. */
    public CustomerFeatures() {
        this(true);
    }

    CustomerFeatures(boolean onArrival) {
        super(NL, ND, CustomerWindows.WINDOWS_MS[CustomerWindows.WINDOWS_MS.length - 1], onArrival);
    }

    public void eval(Context ctx, @StateHint(name = "state", ttl = NO_TTL) MapView<Integer, FeatureState> view,
                     @ArgumentHint(name = "input",
                             value = {ArgumentTrait.SET_SEMANTIC_TABLE, ArgumentTrait.REQUIRE_ON_TIME}) Row input)
            throws Exception {
        FeatureState state = load(view);
        for (int j = 0; j < NL; j++) {
            longs[j] = orNull(input.getField(LONG_COLUMNS[j]));
        }
        Double amount = input.getFieldAs("amount");
        doubles[0] = amount == null ? Double.NaN : amount;
        if (onArrival ? roomAhead(ctx, state) : hold(ctx, state)) {
            if (onArrival) {
                arrive(ctx, state, input.getFieldAs("customer_id"));
            }
            store(view, state);
        } else {
            collect(Row.of(row(longs, 0, doubles[0], null, 1)));
        }
    }

    /** An output row: the input's columns (from {@code ls} at {@code o}), then the customer features (or nulls). */
    private static Object[] row(long[] ls, int o, double amount, Row c, int dropped) {
        int nc = CustomerWindows.ARITY;
        Object[] out = new Object[NL + 1 + nc + 1];
        out[0] = ls[o];
        out[1] = ls[o + 1];
        out[2] = amount;
        for (int j = 2; j < NL; j++) {
            out[j + 1] = nullable(ls[o + j]);
        }
        for (int j = 0; c != null && j < nc; j++) {
            out[NL + 1 + j] = c.getField(j);
        }
        out[NL + 1 + nc] = dropped;
        return out;
    }

    /** The row joins the window now and goes out with the window as known at its arrival. */
    private void arrive(Context ctx, FeatureState state, Long customerId) {
        long t = rowTime(ctx);
        evictBehindWatermark(ctx, state);
        int at = state.rows.add(t, doubles[0], (byte) 0);
        if (ArrivalLog.ON) {
            ArrivalLog.customer(customerId == null ? NULL_LONG : customerId, longs[0], t);
        }
        scheduleExpiry(ctx, t);
        collect(Row.of(row(longs, 0, doubles[0], CustomerWindows.featuresAt(state.rows, at), 0)));
    }

    public void onTimer(OnTimerContext ctx, MapView<Integer, FeatureState> view) throws Exception {
        FeatureState state = load(view);
        long t = ctx.timeContext(Long.class).time();
        int k = release(ctx, state);
        if (k == 0) {
            expire(t, view, state);
            return;
        }
        for (int i = 0; i < k; i++) {
            state.rows.add(t, taken.d[i * ND], (byte) 0);
        }
        evict(state, t);
        store(view, state);
        Row c = CustomerWindows.features(state.rows);
        for (int i = 0; i < k; i++) {
            collect(Row.of(row(taken.l, i * NL, taken.d[i * ND], c, 0)));
        }
    }
}
