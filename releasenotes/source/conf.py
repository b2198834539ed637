"""Sphinx configuration of fleetflow's release notes (reno)."""

project = 'fleetflow release notes'
copyright = 'fleetflow developers'

extensions = ['reno.sphinxext', 'openstackdocstheme']

html_theme = 'openstackdocs'
openstackdocs_repo_name = 'fleetflow/fleetflow'
openstackdocs_use_storyboard = False
openstackdocs_auto_name = False
openstackdocs_bug_project = 'fleetflow'
openstackdocs_bug_tag = 'releasenotes'

master_doc = 'index'
exclude_patterns = ['_build']
