"""The custom-resource watcher: kopf handlers for PystolAction and PystolSchedule, and
the mapping from their camelCase specs to the job model.
"""
