"""Software bills of materials: the model (``model``), SPDX 2.3 and CycloneDX 1.6 writers built
with the official libraries (``spdx``, ``cyclonedx``), OpenVEX (``openvex``) and a reader of
anyone's SPDX / CycloneDX JSON (``read``). Pure: no I/O beyond what the caller hands in."""
