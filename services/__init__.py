"""The app's services (no gradio here): settings, data source, model cache, feature index and map store,
evaluation reports, Hub download, upload decoding, and the `Studio` facade that holds them together.
Importing any of these modules changes no global state and reads no environment variable."""
