"""Test helpers shipped with nwb_ltr: mock factories (``nwb_ltr.testing.mocks``) and more.

Import the submodules you need; this package imports nothing heavy itself.
"""
