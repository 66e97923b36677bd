# hopsdr-agent: nothing to set up or tear down (no service: hopsdrd starts the agent over ssh).
:
