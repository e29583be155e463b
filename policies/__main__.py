"""The PenguinMails policy pack (``pulumi preview --policy-pack policies``; README "Policy pack").

The rules live in modules/policy/rules.py (pure functions, shared with ``penguinmails audit``); the engine
adaptation in modules/policy/pack.py. This file only starts the pack.
"""

from modules.policy.pack import serve

serve()
