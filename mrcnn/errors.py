"""The library's error for bad input.

Every error that a user's file, folder, option or setting causes (a malformed
annotation file, an unreadable image, a weights file of the wrong shape, a
configuration value that cannot work, ...) is an :class:`InputError`, whose
message names the file or setting and says what to do. Command lines report
it in one line and exit with status 2; anything else is a bug.
"""


class InputError(ValueError):
    """Bad input; the message names the file or setting and the fix."""
