package io.streamscore.udfs;

import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.api.dataview.MapView;
import org.apache.flink.types.Row;

/**
 * Per-terminal features over transactions and fraud labels (see {@link TerminalWindows} for what they mean), as a
 * process table function partitioned by terminal and driven by event time.
 *
 * <p>It replaces a 30-day RANGE OVER window with the same aggregate: that operator keeps every row of the window
 * in a map keyed by timestamp and walks all of its keys for each timestamp it emits (16% of the job's JVM time in
 * a profile). Here the state is the window's compact columns ({@link WindowRows}) plus the rows still ahead of the
 * watermark ({@link PendingRows}). A row waits until the watermark passes its time; then every row of that time
 * joins the window, rows older than 30 days leave it, and each transaction row goes out with the window's counts:
 * the RANGE semantics (rows sharing a timestamp count together, a row exactly 30 days older is in).
 *
 * <p>Output: the transaction rows (is_tx = 1) with their features, and for each (terminal, time) whose labels
 * include some that do not count (see {@link TerminalWindows}: for transactions the window has not seen, or repeats),
 * one row with is_tx = 0 and those numbers (on arrival too: a label registers a timer at its time, the one timer
 * this mode uses).
 *
 * <p>A row over the key's bound of rows ahead of the watermark (see {@link RollingFeatures}) goes out at once as a
 * dropped row: {@code is_tx = 2} for a transaction, {@code 3} for a label, with null features.
 *
 * <p>This class emits on arrival; {@link TerminalFeaturesAtWatermark} releases rows at the watermark (see
 * {@link RollingFeatures} for the two modes).
 */
@FunctionHint(output = @DataTypeHint(
        "ROW<transaction_id BIGINT, customer_id BIGINT, amount DOUBLE, event_time BIGINT, produced_at BIGINT, "
                + "ingest_ms BIGINT, is_tx INT, cnt_1d BIGINT, nlabels_1d BIGINT, nfraud_1d BIGINT, cnt_7d BIGINT, "
                + "nlabels_7d BIGINT, nfraud_7d BIGINT, cnt_30d BIGINT, nlabels_30d BIGINT, nfraud_30d BIGINT, "
                + "unknown_labels BIGINT, duplicate_labels BIGINT>"))
public class TerminalFeatures extends RollingFeatures {
    private static final long serialVersionUID = 1L;
    // Pending row layout: longs, then doubles.
    private static final int TX_ID = 0, CUSTOMER = 1, EVENT_TIME = 2, PRODUCED = 3, INGEST = 4, FLAGS = 5, NL = 6;
    private static final int AMOUNT = 0, ND = 1;
    /** is_tx of a row over the bound of rows ahead of the watermark. */
    static final int DROPPED_TX = 2, DROPPED_LABEL = 3;

    /** On arrival (see {@link RollingFeatures}); {@link TerminalFeaturesAtWatermark} is the other mode. */
    public TerminalFeatures() {
        this(true);
    }

    TerminalFeatures(boolean onArrival) {
        super(NL, ND, TerminalWindows.WINDOWS_MS[TerminalWindows.WINDOWS_MS.length - 1], onArrival);
    }

    public void eval(Context ctx, @StateHint(name = "state", ttl = NO_TTL) MapView<Integer, FeatureState> view,
                     @ArgumentHint(name = "input",
                             value = {ArgumentTrait.SET_SEMANTIC_TABLE, ArgumentTrait.REQUIRE_ON_TIME}) Row input)
            throws Exception {
        FeatureState state = load(view);
        Integer isTx = input.getFieldAs("is_tx");
        Integer isLabel = input.getFieldAs("is_label");
        Integer isFraud = input.getFieldAs("is_fraud");
        Double amount = input.getFieldAs("amount");
        longs[TX_ID] = orNull(input.getFieldAs("transaction_id"));
        longs[CUSTOMER] = orNull(input.getFieldAs("customer_id"));
        longs[EVENT_TIME] = orNull(input.getFieldAs("event_time"));
        longs[PRODUCED] = orNull(input.getFieldAs("produced_at"));
        longs[INGEST] = orNull(input.getFieldAs("ingest_ms"));
        longs[FLAGS] = flags(isTx, isLabel, isFraud);
        doubles[AMOUNT] = amount == null ? Double.NaN : amount;
        if (onArrival ? roomAhead(ctx, state) : hold(ctx, state)) {
            if (onArrival) {
                arrive(ctx, state, input.getFieldAs("terminal_id"));
            }
            store(view, state);
        } else {
            collect(Row.of(longs[TX_ID], longs[CUSTOMER], doubles[AMOUNT], longs[EVENT_TIME],
                    nullable(longs[PRODUCED]), nullable(longs[INGEST]),
                    (longs[FLAGS] & TerminalWindows.TX) != 0 ? DROPPED_TX : DROPPED_LABEL,
                    null, null, null, null, null, null, null, null, null, null, null));
        }
    }

    /** The row joins the window now; a transaction goes out with the window as known at its arrival. */
    private void arrive(Context ctx, FeatureState state, Long terminalId) {
        long t = rowTime(ctx);
        long flags = longs[FLAGS];
        boolean tx = (flags & TerminalWindows.TX) != 0;
        evictBehindWatermark(ctx, state);
        int at = TerminalWindows.add(state.rows, t, (byte) flags, longs[TX_ID]);
        scheduleExpiry(ctx, t);
        if (ArrivalLog.ON) {
            ArrivalLog.terminal(terminalId == null ? NULL_LONG : terminalId, longs[TX_ID], t, tx);
        }
        if (tx) {
            Row f = TerminalWindows.featuresAt(state.rows, at, 0L);
            collect(Row.of(longs[TX_ID], longs[CUSTOMER], doubles[AMOUNT], longs[EVENT_TIME],
                    nullable(longs[PRODUCED]), nullable(longs[INGEST]), 1, f.getField(0), f.getField(1),
                    f.getField(2), f.getField(3), f.getField(4), f.getField(5), f.getField(6), f.getField(7),
                    f.getField(8), 0L, 0L));
        } else if ((flags & TerminalWindows.LABEL) != 0) {
            // Whether the label's transaction was scored is asked once the watermark passes the label's time: in a
            // fast replay a label can arrive before its transaction, which then still arrives on time.
            ctx.timeContext(Long.class).registerOnTime(t);
        }
    }

    /** On arrival: the labels at the timer's time that do not count; then the key may expire. */
    private void countUnknownLabels(OnTimerContext ctx, MapView<Integer, FeatureState> view) throws Exception {
        long t = ctx.timeContext(Long.class).time();
        FeatureState state = load(view);
        collectIgnored(t, TerminalWindows.ignoredLabelsAt(state.rows, t));
        expire(t, view, state);
    }

    private void collectIgnored(long t, long[] ignored) {
        if (ignored[0] > 0 || ignored[1] > 0) {
            collect(Row.of(null, null, null, t, null, null, 0, null, null, null, null, null, null, null, null, null,
                    ignored[0], ignored[1]));
        }
    }

    public void onTimer(OnTimerContext ctx, MapView<Integer, FeatureState> view) throws Exception {
        if (onArrival) {
            countUnknownLabels(ctx, view);
            return;
        }
        FeatureState state = load(view);
        long t = ctx.timeContext(Long.class).time();
        int k = release(ctx, state);
        if (k == 0) {
            expire(t, view, state);
            return;
        }
        for (int i = 0; i < k; i++) {
            TerminalWindows.add(state.rows, t, (byte) taken.l[i * NL + FLAGS], taken.l[i * NL + TX_ID]);
        }
        evict(state, t);
        store(view, state);
        long[] ignored = TerminalWindows.ignoredLabelsAt(state.rows, t);
        Row f = TerminalWindows.featuresAt(state.rows, state.rows.n - 1, ignored[0]);
        for (int i = 0; i < k; i++) {
            int o = i * NL;
            if ((taken.l[o + FLAGS] & TerminalWindows.TX) == 0) {
                continue;
            }
            collect(Row.of(taken.l[o + TX_ID], taken.l[o + CUSTOMER], taken.d[i * ND + AMOUNT],
                    taken.l[o + EVENT_TIME], nullable(taken.l[o + PRODUCED]), nullable(taken.l[o + INGEST]), 1,
                    f.getField(0), f.getField(1), f.getField(2), f.getField(3), f.getField(4), f.getField(5),
                    f.getField(6), f.getField(7), f.getField(8), ignored[0], 0L));
        }
        collectIgnored(t, ignored);
    }

    private static long flags(Integer isTx, Integer isLabel, Integer isFraud) {
        return (isTx != null && isTx != 0 ? TerminalWindows.TX : 0) | (isLabel != null && isLabel != 0
                ? TerminalWindows.LABEL : 0) | (isFraud != null && isFraud != 0 ? TerminalWindows.FRAUD : 0);
    }
}
