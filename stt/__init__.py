"""Speech-to-text behind one small protocol (``stt.protocol``), one module or package per engine."""
