"""Test and benchmark helpers; library code never imports this package."""
