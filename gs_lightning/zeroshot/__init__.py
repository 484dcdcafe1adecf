"""Zero-shot classification, in one room: the tasks (class names and prompt templates), the classifier the
text tower builds from them, the metrics, and the DataModule of labelled eval images or their splats."""
