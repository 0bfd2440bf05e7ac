"""What training (validation, the test scored once) and evaluation share: decoding and sacrebleu scoring."""
