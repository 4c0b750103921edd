package io.streamscore.udfs;

/**
 * {@link TerminalFeatures} in the complete, event-time mode: each row waits until the watermark passes its time and
 * goes out with every row of its window, late arrivals within the out-of-orderness bound included (see
 * {@link RollingFeatures}). For backfills and audits: every decision waits at least the bound of event time.
 */
public class TerminalFeaturesAtWatermark extends TerminalFeatures {
    private static final long serialVersionUID = 1L;

    public TerminalFeaturesAtWatermark() {
        super(false);
    }
}
