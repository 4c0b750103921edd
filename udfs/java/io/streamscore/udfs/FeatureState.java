package io.streamscore.udfs;

import org.apache.flink.table.annotation.DataTypeHint;

/**
 * One key's state in a feature function ({@link RollingFeatures}): the window's rows and the rows still ahead of
 * the watermark. A RAW type with our own serializer ({@link FeatureStateSerializer}): checkpoints write the used
 * rows as they are instead of converting the state to Flink's row format.
 */
@DataTypeHint(value = "RAW", bridgedTo = FeatureState.class, rawSerializer = FeatureStateSerializer.class)
public class FeatureState {
    public WindowRows rows = new WindowRows();
    public PendingRows pending = new PendingRows();
}
