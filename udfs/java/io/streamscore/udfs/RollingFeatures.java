package io.streamscore.udfs;

import org.apache.flink.table.api.dataview.MapView;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.types.Row;

/**
 * What both feature functions ({@link TerminalFeatures}, {@link CustomerFeatures}) do with time, in one of two emit
 * modes.
 *
 * <p>On arrival (the default): a row joins the key's window at its own timestamp as soon as it arrives (after the
 * rows already there with the same timestamp) and goes out at once with the window as known then: every row
 * received so far in {@code [t - W, t]}. No transaction waits for a watermark or a later event. The watermark
 * evicts (a row older than {@code watermark - longest window} can be in no on-time row's window; rows behind the
 * watermark are routed to the late topic before they get here) and, in {@link TerminalFeatures}, times the count
 * of labels whose transaction never came.
 *
 * <p>At the watermark (the complete, event-time mode, for backfills and audits): an input row waits in
 * {@link FeatureState#pending} with a timer at its own timestamp; when the watermark passes it, every row of that
 * timestamp comes back out at once ({@link #release}) and rows older than the longest window leave the window.
 *
 * <p>State is bounded two ways (the job's global parameters, from fraud.state_ttl_ms and fraud.max_rows_ahead):
 * <ul>
 *   <li>A key's state expires once the watermark is {@code state_ttl_ms} past its newest row (one timer per key and
 *   {@code state_ttl_ms / 8}, so a busy key holds at most nine): a producer that writes random ids leaves keys
 *   that are dropped instead of a heap that grows until the job dies. A key that comes back starts afresh.</li>
 *   <li>A key holds at most {@code max_rows_ahead} rows ahead of the watermark (on arrival: in its window; at the
 *   watermark: waiting in {@link FeatureState#pending}). A row over the bound is not added: it goes out as a
 *   dropped row, which the job makes a dead letter ({@code too-many-ahead}).</li>
 * </ul>
 *
 * <p>A subclass fills {@link #longs} and {@link #doubles} per input row and reads the released rows from
 * {@link #taken}.
 */
abstract class RollingFeatures extends ProcessTableFunction<Row> {
    private static final long serialVersionUID = 1L;
    /**
     * The state's time-to-live: none (the functions evict old rows themselves). Left unset, Flink 2.3 turns
     * table.exec.state.ttl = 0 into a TTL of Long.MAX_VALUE, which still wraps the state in TTL state with
     * incremental cleanup on every access (JFR: 15% of the job's JVM time); an explicit 0 disables it.
     */
    static final String NO_TTL = "0 ms";
    /** The one key of the state's map view. */
    static final Integer STATE_KEY = 0;
    /** Marks a null long column while a row waits. */
    static final long NULL_LONG = Long.MIN_VALUE;
    /** Global job parameters (pipeline.global-job-parameters, set by jobs/common.py from the fraud config). */
    static final String TTL_PARAM = "streamscore.fraud.state-ttl-ms";
    static final String MAX_AHEAD_PARAM = "streamscore.fraud.max-rows-ahead";
    static final long DEFAULT_TTL_MS = 30L * 86_400_000L;
    static final int DEFAULT_MAX_AHEAD = 1000;

    /** 0: keys never expire. */
    long ttlMs = DEFAULT_TTL_MS;
    int maxAhead = DEFAULT_MAX_AHEAD;

    final int nl;
    final int nd;
    /** Emit each row when it arrives (true) or when the watermark passes its time (false). */
    final boolean onArrival;
    private final long longestWindowMs;
    // Scratch for one input row; serialised with the function (a transient array would be null after that).
    final long[] longs;
    final double[] doubles;
    transient PendingRows.Taken taken;

    RollingFeatures(int nl, int nd, long longestWindowMs, boolean onArrival) {
        this.nl = nl;
        this.nd = nd;
        this.onArrival = onArrival;
        this.longestWindowMs = longestWindowMs;
        this.longs = new long[nl];
        this.doubles = new double[nd];
    }

    @Override
    public void open(FunctionContext context) throws Exception {
        super.open(context);
        ttlMs = Long.parseLong(context.getJobParameter(TTL_PARAM, Long.toString(DEFAULT_TTL_MS)));
        maxAhead = Integer.parseInt(context.getJobParameter(MAX_AHEAD_PARAM, Integer.toString(DEFAULT_MAX_AHEAD)));
    }

    /**
     * Keeps the row in {@link #longs}/{@link #doubles} until the watermark passes its time; false (and nothing
     * kept) when the key already holds {@link #maxAhead} rows.
     */
    final boolean hold(Context ctx, FeatureState state) {
        if (state.pending.n >= maxAhead) {
            return false;
        }
        TimeContext<Long> time = ctx.timeContext(Long.class);
        long t = time.time();
        state.pending.add(t, longs, doubles);
        time.registerOnTime(t);
        scheduleExpiry(ctx, t);
        return true;
    }

    /** On arrival: whether the window may take one more row ahead of the watermark. */
    final boolean roomAhead(Context ctx, FeatureState state) {
        Long wm = ctx.timeContext(Long.class).currentWatermark();
        return state.rows.countAfter(wm == null ? Long.MIN_VALUE : wm) < maxAhead;
    }

    /**
     * The key's expiry timer for a row of time {@code t}: {@link #ttlMs} later, rounded up to an eighth of it, so
     * the rows of a busy key share a few timers.
     */
    final void scheduleExpiry(Context ctx, long t) {
        if (ttlMs <= 0) {
            return;
        }
        long step = Math.max(1L, ttlMs / 8);
        long at = t > Long.MAX_VALUE - ttlMs - step ? Long.MAX_VALUE : Math.floorDiv(t + ttlMs + step - 1, step) * step;
        ctx.timeContext(Long.class).registerOnTime(at);
    }

    /**
     * At a timer of time {@code t}: drops the key's state when nothing waits and its newest row is at least
     * {@link #ttlMs} older; returns whether it did.
     */
    final boolean expire(long t, MapView<Integer, FeatureState> view, FeatureState state) throws Exception {
        if (ttlMs <= 0 || state.pending.n > 0 || (state.rows.n > 0 && state.rows.newest() > t - ttlMs)) {
            return false;
        }
        view.clear();
        return true;
    }

    /**
     * The timer's rows, moved into {@link #taken} (row i's longs from {@code i * nl}, doubles from {@code i * nd});
     * returns how many there were.
     */
    final int release(OnTimerContext ctx, FeatureState state) {
        if (taken == null) {
            taken = new PendingRows.Taken();
        }
        return state.pending.take(ctx.timeContext(Long.class).time(), nl, nd, taken);
    }

    /** After the released rows joined the window at time {@code t}: the rows that are now too old leave it. */
    final void evict(FeatureState state, long t) {
        state.rows.evictBefore(t - longestWindowMs);
    }

    /**
     * On arrival: the rows no on-time row can see any more leave the window (those older than the watermark minus
     * the longest window). Before the first watermark nothing leaves.
     */
    final void evictBehindWatermark(Context ctx, FeatureState state) {
        Long wm = ctx.timeContext(Long.class).currentWatermark();
        if (wm != null && wm > Long.MIN_VALUE + longestWindowMs) {
            state.rows.evictBefore(wm - longestWindowMs);
        }
    }

    /** The input row's own time (its on_time column). */
    static long rowTime(Context ctx) {
        return ctx.timeContext(Long.class).time();
    }

    /**
     * The key's state, from its one-entry map view: a new one for a new key. A view, not a plain (eager) state
     * entry: before each call Flink's process-table runner reads an eager entry, and after it, to skip unchanged
     * state, hashes the whole value before and after and compares them, which for a 30-day window of rows was a
     * quarter of the job's JVM time (JFR, steady-state drain). A view is read and written only when asked; the
     * functions write the state back after every change ({@link #store}), as a state backend that serialises
     * (RocksDB) needs.
     */
    static FeatureState load(MapView<Integer, FeatureState> view) throws Exception {
        FeatureState state = view.get(STATE_KEY);
        return state == null ? new FeatureState() : state;
    }

    static void store(MapView<Integer, FeatureState> view, FeatureState state) throws Exception {
        view.put(STATE_KEY, state);
    }

    static long orNull(Object v) {
        return v == null ? NULL_LONG : ((Number) v).longValue();
    }

    static Long nullable(long v) {
        return v == NULL_LONG ? null : v;
    }
}
