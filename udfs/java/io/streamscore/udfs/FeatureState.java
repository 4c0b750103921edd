package io.streamscore.udfs;

/**
 * One key's state in a feature function ({@link RollingFeatures}): the window's rows and the rows still ahead of
 * the watermark. Public fields and a default constructor make it a structured type Flink keeps in keyed state.
 */
public class FeatureState {
    public WindowRows rows = new WindowRows();
    public PendingRows pending = new PendingRows();
}
