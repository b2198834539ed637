"""Sphinx configuration of fleetflow's documentation."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '_exts'))

project = 'fleetflow'
copyright = 'fleetflow developers'

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.viewcode',
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
    'cliff.sphinxext',
    'fleetflow_docs',
    'openstackdocstheme',
]

# openstackdocstheme
html_theme = 'openstackdocs'
openstackdocs_repo_name = 'fleetflow/fleetflow'
openstackdocs_use_storyboard = False
openstackdocs_auto_name = False
openstackdocs_bug_project = 'fleetflow'
openstackdocs_bug_tag = 'doc'

# oslo.config: the sample file, generated from the options at each build
config_generator_config_file = os.path.join(
    os.path.dirname(__file__), '..', '..', 'etc', 'fleetflow',
    'fleetflow-config-generator.conf')
sample_config_basename = '_static/fleetflow'

# cliff: the global options of every command are on the CLI page once
autoprogram_cliff_ignored = ['--help', '--format', '--column',
                             '--max-width', '--fit-width', '--print-empty',
                             '--noindent', '--quote', '--sort-column',
                             '--sort-ascending', '--sort-descending',
                             '--prefix']

autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'show-inheritance': True}

master_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'native'
