"""Files this package writes: the one atomic writer (``atomic``).

Example:
>>> from rankloss_tf.io import atomic
>>> atomic.is_temporary("model.keras")
False
"""
