"""Cohorts: the spec file, assignment of rows to cohorts, auxiliary labels, discovery."""
