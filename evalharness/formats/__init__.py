"""Files other tools read and write: data records, FastChat and AlpacaEval formats."""
