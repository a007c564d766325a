"""The ``c2al-rec`` command: one thin module per verb (parse, call a library function, print).

``main`` lists the verbs from a static table, so ``c2al-rec --help`` imports no verb module and no
torchrec; a verb's module is imported only when that verb runs.
"""
